"""TLS on every link: the configuration, and real TLS servers with certificates made for the test."""

from __future__ import annotations

import json
import ssl
import time
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.config import InfluxConfig, MqttConfig, TlsConfig, parse
from daemon.errors import ConfigError, SinkError
from daemon.links.influx import V2Writer
from daemon.links.tls import client_context, describe
from daemon.points import Point
from simulators import tls_certs
from tests.helpers import wardd, write_ward_config
from tests.servers import Mosquitto, tls_mosquitto, victoria_metrics
from tests.ward_load import WarddProcess, poll_until

# --- configuration: pure ----------------------------------------------------------------------------


def test_tls_settings_with_a_plain_text_url_are_refused() -> None:
    with pytest.raises(ValueError, match="use mqtts://"):
        MqttConfig(url="mqtt://broker:1883", tls=TlsConfig(ca_file=Path("/etc/wardd/ca.pem")))
    with pytest.raises(ValueError, match="use https://"):
        InfluxConfig(url="http://db:8086", tls=TlsConfig(min_version="1.3"))
    with pytest.raises(ValueError, match="key_file is given without cert_file"):
        TlsConfig(key_file=Path("k.pem"))
    # The defaults with a plain URL are fine: nothing asked for TLS.
    assert MqttConfig(url="mqtt://broker:1883").tls == TlsConfig()


def test_an_unusable_ca_file_says_which_setting_and_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError) as caught:
        client_context(TlsConfig(ca_file=missing), "mqtt")
    (issue,) = caught.value.issues
    assert issue.location == "mqtt.tls.ca_file"
    assert str(missing) in issue.reason
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError) as caught:
        client_context(TlsConfig(ca_file=garbage, cert_file=garbage), "influx")
    assert caught.value.issues[0].location == "influx.tls.ca_file"


def test_the_context_keeps_the_settings(tmp_path: Path) -> None:
    context = client_context(TlsConfig(min_version="1.3", check_hostname=False), "mqtt")
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert context.check_hostname is False
    assert context.verify_mode is ssl.CERT_REQUIRED  # the certificate is checked regardless
    assert client_context(TlsConfig(), "mqtt").check_hostname is True


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (20, "not signed by a trusted CA"),
        (10, "has expired"),
        (62, "for another name"),
        (64, "for another name"),
        (18, "self-signed"),
    ],
)
def test_verification_failures_are_said_in_plain_words(code: int, words: str) -> None:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_code = code
    error.verify_message = "openssl's words"
    wrapped = RuntimeError("connection failed")
    wrapped.__context__ = error
    reason = describe(wrapped)
    assert reason is not None
    assert words in reason
    assert describe(RuntimeError("plain")) is None


# --- a real broker over TLS ---------------------------------------------------------------------------

WARD = "haem"


@pytest.fixture
def pki(tmp_path: Path) -> tuple[tls_certs.Authority, tls_certs.ServerCert, tls_certs.Authority]:
    """The ward's CA and a broker certificate it signed, and a CA the broker does not use."""
    ca = tls_certs.authority(tmp_path / "pki")
    cert = tls_certs.server_cert(tmp_path / "pki", ca)
    stranger = tls_certs.authority(tmp_path / "other-pki", name="stranger-ca")
    return ca, cert, stranger


@pytest.fixture
def broker(
    tmp_path: Path, pki: tuple[tls_certs.Authority, tls_certs.ServerCert, tls_certs.Authority]
) -> Iterator[Mosquitto]:
    ca, cert, _ = pki
    with tls_mosquitto(tmp_path / "mosquitto", ca=ca.cert, cert=cert.cert, key=cert.key) as server:
        yield server


def _config(path: Path, *, port: int, host: str = "127.0.0.1", tls: str = "") -> Path:
    write_ward_config(
        path,
        mqtt_url=f"mqtts://{host}:{port}",
        prefix="tls",
        ward=WARD,
        beds=["1"],
        mqtt=f"reconnect_min_s = 0.2\nreconnect_max_s = 1.0\n{tls}",
    )
    parse(tomllib.loads(path.read_text()))  # a valid config, or the test is wrong
    return path


def _run_until(config: Path, log: Path, words: str, timeout_s: float = 30.0) -> str:
    """``wardd run`` until its log shows ``words`` (failing after ``timeout_s``); its whole log."""
    daemon = WarddProcess(config, log)
    daemon.start()
    try:
        poll_until(lambda: words in daemon.output() or not daemon.alive, timeout_s, repr(words))
    finally:
        daemon.terminate()
        daemon.close()
    return daemon.output()


@pytest.mark.integration
def test_the_daemon_and_wardd_ack_reach_a_broker_signed_by_the_wards_ca(
    tmp_path: Path,
    broker: Mosquitto,
    pki: tuple[tls_certs.Authority, tls_certs.ServerCert, tls_certs.Authority],
) -> None:
    ca, _, _ = pki
    config = _config(tmp_path / "ward.toml", port=broker.port, tls=f'tls.ca_file = "{ca.cert}"')
    output = _run_until(config, tmp_path / "wardd.log", "MQTT connected")
    assert "MQTT connected" in output
    # wardd ack uses the same settings: it reaches the broker, which knows no such alert.
    result = wardd("ack", "--config", str(config), "1-FEVER-99", "--user", "nurse-a")
    assert result.returncode == 1
    assert "no open alert with id '1-FEVER-99'" in result.stderr


@pytest.mark.integration
def test_a_broker_signed_by_another_ca_is_refused_and_said_so(
    tmp_path: Path,
    broker: Mosquitto,
    pki: tuple[tls_certs.Authority, tls_certs.ServerCert, tls_certs.Authority],
) -> None:
    _, _, stranger = pki
    config = _config(tmp_path / "ward.toml", port=broker.port, tls=f'tls.ca_file = "{stranger.cert}"')
    output = _run_until(config, tmp_path / "wardd.log", "not signed by a trusted CA", timeout_s=20)
    assert "TLS: the server's certificate is not signed by a trusted CA" in output
    assert "MQTT connected" not in output
    result = wardd("ack", "--config", str(config), "1-FEVER-99", "--user", "nurse-a")
    assert result.returncode == 1
    assert "not signed by a trusted CA" in result.stderr


@pytest.mark.integration
def test_a_lasting_tls_refusal_raises_a_technical_alert_that_says_what_was_refused(
    tmp_path: Path,
    broker: Mosquitto,
    pki: tuple[tls_certs.Authority, tls_certs.ServerCert, tls_certs.Authority],
) -> None:
    """At run time the daemon cannot tell the stations (the broker is what fails), so the
    alert is in its store: ``wardd status`` and the console show it."""
    _, _, stranger = pki
    tls = f'tls.ca_file = "{stranger.cert}"\nalert_after_s = 1.0'
    config = _config(tmp_path / "ward.toml", port=broker.port, tls=tls)
    daemon = WarddProcess(config, tmp_path / "wardd.log")
    daemon.start()
    try:
        poll_until(
            lambda: "BROKER_UNAVAILABLE" in wardd("status", "--config", str(config)).stdout, 30, "the alert"
        )
        status = wardd("status", "--config", str(config)).stdout
        assert "MEDIUM BROKER_UNAVAILABLE [active]" in status
        assert "TLS: the server's certificate is not signed by a trusted CA" in status
    finally:
        daemon.terminate()
        daemon.close()


@pytest.mark.integration
def test_a_name_the_certificate_does_not_carry_is_refused_unless_the_check_is_off(
    tmp_path: Path, pki: tuple[tls_certs.Authority, tls_certs.ServerCert, tls_certs.Authority]
) -> None:
    ca, _, _ = pki
    # A broker whose certificate, from the right CA, names another host than 127.0.0.1.
    elsewhere = tls_certs.server_cert(
        tmp_path / "pki", ca, names=("elsewhere.invalid",), ips=(), name="elsewhere"
    )
    with tls_mosquitto(tmp_path / "mosquitto", ca=ca.cert, cert=elsewhere.cert, key=elsewhere.key) as broker:
        config = _config(tmp_path / "ward.toml", port=broker.port, tls=f'tls.ca_file = "{ca.cert}"')
        output = _run_until(config, tmp_path / "wardd.log", "another name", timeout_s=20)
        assert "TLS: the server's certificate is for another name" in output
        assert "MQTT connected" not in output
        unchecked = _config(
            tmp_path / "unchecked.toml",
            port=broker.port,
            tls=f'tls.ca_file = "{ca.cert}"\ntls.check_hostname = false',
        )
        assert "MQTT connected" in _run_until(unchecked, tmp_path / "unchecked.log", "MQTT connected")


# --- the database over HTTPS ---------------------------------------------------------------------


@pytest.mark.integration
async def test_points_reach_a_database_over_https_with_the_wards_ca(
    tmp_path: Path, pki: tuple[tls_certs.Authority, tls_certs.ServerCert, tls_certs.Authority]
) -> None:
    ca, cert, stranger = pki
    with victoria_metrics(tmp_path / "vm", tls=(cert.cert, cert.key)) as vm:
        url = f"https://127.0.0.1:{vm.port}"
        writer = V2Writer(InfluxConfig(url=url, tls=TlsConfig(ca_file=ca.cert)), None)
        point = Point(
            "vitals", {"ward": WARD, "bed": "1"}, {"temp_c": 38.2}, datetime(2026, 3, 2, tzinfo=UTC)
        )
        try:
            await writer.write([point.to_line()])
        finally:
            await writer.close()
        context = ssl.create_default_context(cafile=str(ca.cert))
        query = urllib.parse.urlencode({"match[]": '{__name__="vitals_temp_c"}'})
        rows: list[dict[str, object]] = []
        deadline = time.monotonic() + 15
        while not rows and time.monotonic() < deadline:
            urllib.request.urlopen(f"{url}/internal/force_flush", timeout=10, context=context).close()
            with urllib.request.urlopen(f"{url}/api/v1/export?{query}", timeout=10, context=context) as resp:
                rows = [json.loads(line) for line in resp.read().decode().split("\n") if line.strip()]
            time.sleep(0.2)
        assert [row["values"] for row in rows] == [[38.2]]

        refused = V2Writer(InfluxConfig(url=url, tls=TlsConfig(ca_file=stranger.cert)), None)
        try:
            with pytest.raises(SinkError) as caught:
                await refused.write([point.to_line()])
        finally:
            await refused.close()
        assert "TLS: the server's certificate is not signed by a trusted CA" in str(caught.value)
        assert caught.value.retryable
