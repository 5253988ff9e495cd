"""The locked-down broker: a real mosquitto running ``config/mosquitto-secure.conf`` with
the shipped ACL file ``config/mosquitto-acl.conf`` as it is (its example users, ward
``icu``, beds ``b1`` and ``b2``), TLS certificates made for the test and a password file
made with ``mosquitto_passwd``.

Every "cannot" is proved by delivery, with a positive control in the same test: the
forbidden publish is followed by an allowed one that the same observer must receive. A
QoS 1 publish is decided by the broker before it sends the PUBACK, and mosquitto delivers
to one subscriber in the order it decided, so once the allowed message has arrived the
forbidden one would have arrived before it. The clients speak MQTT 3.1.1 unless a test
says otherwise: its PUBACK says nothing about a refusal (see the ACL file), so only
delivery can tell.

Each test has a broker of its own, so the shipped topic prefix ``ward`` (which the ACL
names) is shared by nobody else.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from daemon.config import TlsConfig
from daemon.links.tls import client_context, describe
from simulators import tls_certs
from simulators.secure import SHIPPED_ACL, SHIPPED_MOSQUITTO_CONF, SHIPPED_SECURE_CONF
from tests.helpers import wardd, write_ward_config
from tests.servers import Mosquitto, secure_mosquitto
from tests.ward_load import WarddProcess, poll_until

WAIT_S = 10.0

PASSWORDS = {
    "wardd": "pw-wardd-4d1c",
    "station-icu": "pw-station-90aa",
    "entry-icu": "pw-entry-17fe",
    "pharmacy": "pw-pharmacy-3b02",
    "monitor-icu-b1": "pw-monitor-b1-c7d3",
    "monitor-icu-b2": "pw-monitor-b2-5e61",
}
"""The example users of the shipped ACL file, with passwords made up for the test."""

ALERT = "b1-FEVER-1"
STATE = f"ward/icu/bed/b1/alerts/{ALERT}"
"""The retained state topic of an open alert at bed b1."""


@dataclass(frozen=True)
class Pki:
    """The ward's CA, the broker's certificate it signed, and a CA the broker does not use."""

    ca: tls_certs.Authority
    cert: tls_certs.ServerCert
    stranger: tls_certs.Authority


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = tls_certs.authority(folder / "ward")
    return Pki(
        ca, tls_certs.server_cert(folder / "ward", ca), tls_certs.authority(folder / "other", "stranger-ca")
    )


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    with secure_mosquitto(
        tmp_path / "mosquitto", ca=pki.ca.cert, cert=pki.cert.cert, key=pki.cert.key, users=PASSWORDS
    ) as server:
        yield server


@dataclass(frozen=True)
class Received:
    """One message as a client received it."""

    topic: str
    payload: bytes
    retain: bool


class Peer:
    """A paho client of the broker as one user, with waits on what the broker answers.

    TLS is set up as wardd sets it up (``daemon.links.tls.client_context``): the CA file,
    certificate and host name checked.
    """

    def __init__(
        self,
        broker: Mosquitto,
        user: str | None,
        *,
        ca: Path,
        password: str | None = None,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
    ) -> None:
        self.broker = broker
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{user or 'anonymous'}-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
        )
        self.client.tls_set_context(client_context(TlsConfig(ca_file=ca), "mqtt"))
        if user is not None:
            self.client.username_pw_set(user, PASSWORDS.get(user, "") if password is None else password)
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self._connack: ReasonCode | None = None
        self._pubacks: dict[int, ReasonCode] = {}
        self._subacks: dict[int, list[ReasonCode]] = {}
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # paho's callbacks, on its network thread
    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, code: ReasonCode, _p: object) -> None:
        with self._changed:
            self._connack = code
            self._changed.notify_all()

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, code: ReasonCode, _p: object) -> None:
        with self._changed:
            self._pubacks[mid] = code
            self._changed.notify_all()

    def _on_subscribe(
        self, _c: mqtt.Client, _u: object, mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        with self._changed:
            self._subacks[mid] = codes
            self._changed.notify_all()

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.received.append(Received(message.topic, bytes(message.payload), bool(message.retain)))
            self._changed.notify_all()

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(done, WAIT_S):
                raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")

    def connect(self) -> ReasonCode:
        """Connect (TLS handshake included) and wait for the broker's CONNACK: its code."""
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        self._wait(lambda: self._connack is not None, "CONNACK")
        assert self._connack is not None
        return self._connack

    def close(self) -> None:
        """Disconnect and stop paho's thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def subscribe(self, *filters: str) -> None:
        """Subscribe with QoS 1 and wait for the SUBACK (which, with the ACL file, always grants)."""
        for topic_filter in filters:
            _, mid = self.client.subscribe(topic_filter, qos=1)
            assert mid is not None, topic_filter
            self._wait(partial(self._subacks.__contains__, mid), f"SUBACK for {topic_filter}")
            assert [code.is_failure for code in self._subacks[mid]] == [False], topic_filter

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
        """Publish with QoS 1 and wait for the PUBACK, so the broker has decided: its code."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        self._wait(lambda: info.mid in self._pubacks, f"PUBACK for {topic}")
        return self._pubacks[info.mid]

    def wait_for(self, topic: str, payload: bytes) -> list[Received]:
        """Wait until ``payload`` arrived on ``topic``; everything received so far."""
        self._wait(
            lambda: any(m.topic == topic and m.payload == payload for m in self.received),
            f"{payload!r} on {topic}",
        )
        with self._changed:
            return list(self.received)


@contextlib.contextmanager
def connected(
    broker: Mosquitto,
    user: str,
    ca: Path,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
    *,
    password: str | None = None,
) -> Iterator[Peer]:
    """A ``Peer`` connected as ``user`` with its password (from ``PASSWORDS`` unless
    given); fails if the broker refuses it."""
    peer = Peer(broker, user, ca=ca, protocol=protocol, password=password)
    try:
        code = peer.connect()
        assert not code.is_failure, f"{user} refused: {code}"
        yield peer
    finally:
        peer.close()


def topics(received: list[Received]) -> list[str]:
    """The topics of ``received``, in order."""
    return [message.topic for message in received]


# --- who may connect ----------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("protocol", [MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5])
def test_anonymous_unknown_users_and_wrong_passwords_are_refused(
    broker: Mosquitto, pki: Pki, protocol: MQTTProtocolVersion
) -> None:
    refusals = {}
    for user, password in [(None, None), ("station-icu", "not-its-password"), ("nurse-nobody", "pw")]:
        peer = Peer(broker, user, ca=pki.ca.cert, password=password, protocol=protocol)
        try:
            refusals[user] = peer.connect()
        finally:
            peer.close()
    # 3.1.1 return code 5 and MQTT 5 reason code 0x87 (paho reports both as 135), the same
    # answer for all three: the broker does not say whether a user exists.
    expected = dict.fromkeys([None, "station-icu", "nurse-nobody"], (0x87, "Not authorized"))
    assert {user: (code.value, code.getName()) for user, code in refusals.items()} == expected
    # The positive control: the same user with its password is accepted.
    with connected(broker, "station-icu", pki.ca.cert, protocol):
        pass


@pytest.mark.integration
def test_a_client_that_trusts_another_ca_is_refused_with_a_clear_error(broker: Mosquitto, pki: Pki) -> None:
    # The TLS handshake as every wardd link makes it (paho itself leaves the socket of a
    # failed handshake open, which this suite's warnings-as-errors would report).
    context = client_context(TlsConfig(ca_file=pki.stranger.cert), "mqtt")
    with (
        socket.create_connection((broker.host, broker.port), timeout=WAIT_S) as sock,
        pytest.raises(ssl.SSLCertVerificationError) as caught,
    ):
        context.wrap_socket(sock, server_hostname=broker.host).close()
    assert "TLS: the server's certificate is not signed by a trusted CA" in str(describe(caught.value))
    with connected(broker, "station-icu", pki.ca.cert):
        pass


def _tls_version_agreed(broker: Mosquitto, ca: Path, version: ssl.TLSVersion) -> str | None:
    """The TLS version of a handshake in which the client offers ``version`` only."""
    context = client_context(TlsConfig(ca_file=ca), "mqtt")
    context.minimum_version = context.maximum_version = version
    with (
        socket.create_connection((broker.host, broker.port), timeout=WAIT_S) as sock,
        context.wrap_socket(sock, server_hostname=broker.host) as tls,
    ):
        return tls.version()


@pytest.mark.integration
def test_tls_1_2_is_the_lowest_version_the_broker_accepts(broker: Mosquitto, pki: Pki) -> None:
    assert _tls_version_agreed(broker, pki.ca.cert, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert _tls_version_agreed(broker, pki.ca.cert, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    # TLS 1.1 through openssl's own client at its lowest security level, so that the
    # client would accept it: the refusal is the broker's ("alert protocol version").
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{broker.port}", "-tls1_1", "-CAfile",
         str(pki.ca.cert), "-cipher", "DEFAULT@SECLEVEL=0"],
        input=b"", capture_output=True, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert "alert protocol version" in (result.stdout + result.stderr).decode(errors="replace")


# --- who may publish what -------------------------------------------------------------------------

MAY_PUBLISH = {
    "monitor-icu-b1": ["ward/icu/bed/b1/vitals"],
    "entry-icu": ["ward/icu/bed/b1/observations"],
    "pharmacy": ["ward/icu/bed/b1/infusion/bag", "ward/haem/bed/7/infusion/bag"],
    "station-icu": [f"{STATE}/ack/by/station-icu"],
}
"""For each device user, what it may publish among ``CANDIDATES`` (all read by wardd)."""

CANDIDATES = [
    # inputs (wardd reads them)
    "ward/icu/bed/b1/vitals",
    "ward/icu/bed/b2/vitals",
    "ward/icu/bed/b1/observations",
    "ward/haem/bed/7/observations",
    "ward/icu/bed/b1/infusion/bag",
    "ward/haem/bed/7/infusion/bag",
    # acknowledgements (wardd reads them)
    f"{STATE}/ack",
    f"{STATE}/ack/by/station-icu",
    f"{STATE}/ack/by/nurse-b",
    # the daemon's outputs (station-icu reads them)
    "ward/icu/bed/b1/alerts",
    STATE,
    f"{STATE}/ack/reply",
    f"{STATE}/ack/by/station-icu/reply",
    "ward/icu/escalations",
]


@pytest.mark.integration
@pytest.mark.parametrize("user", sorted(MAY_PUBLISH))
def test_each_device_publishes_its_own_topics_only(broker: Mosquitto, pki: Pki, user: str) -> None:
    may = MAY_PUBLISH[user]
    # Two observers that together may read every candidate: wardd its inputs and the
    # acknowledgements, station-icu the alert topics of its ward and its own replies.
    with (
        connected(broker, "wardd", pki.ca.cert) as wardd,
        connected(broker, "station-icu", pki.ca.cert) as station,
        connected(broker, user, pki.ca.cert) as device,
    ):
        wardd.subscribe("#")
        station.subscribe("#")
        for topic in CANDIDATES:
            if topic not in may:
                device.publish(topic, b"forged", retain=topic == STATE)
        for topic in may:
            device.publish(topic, b"allowed")
        # The station's fence: a transition that only wardd may publish.
        wardd.publish("ward/icu/bed/b2/alerts", b"fence")
        to_wardd = wardd.wait_for(may[-1], b"allowed")
        to_station = station.wait_for("ward/icu/bed/b2/alerts", b"fence")
    assert [(m.topic, m.payload) for m in to_wardd] == [(topic, b"allowed") for topic in may]
    assert [(m.topic, m.payload) for m in to_station] == [("ward/icu/bed/b2/alerts", b"fence")]


@pytest.mark.integration
def test_a_monitor_can_acknowledge_only_as_itself_which_the_daemon_must_refuse(
    broker: Mosquitto, pki: Pki
) -> None:
    # The ACL's patterns apply to every user: a monitor cannot pose as a station, but it
    # can publish an acknowledgement under its own name. The daemon's allow-list
    # (alerts.ack_users) is what keeps it from counting.
    with (
        connected(broker, "wardd", pki.ca.cert) as wardd,
        connected(broker, "monitor-icu-b1", pki.ca.cert) as monitor,
    ):
        wardd.subscribe("ward/+/bed/+/alerts/+/ack", "ward/+/bed/+/alerts/+/ack/by/+")
        monitor.publish(f"{STATE}/ack/by/station-icu", b"as the station")
        monitor.publish(f"{STATE}/ack", b"the old unauthenticated form")
        monitor.publish(f"{STATE}/ack/by/monitor-icu-b1", b"as itself")
        received = wardd.wait_for(f"{STATE}/ack/by/monitor-icu-b1", b"as itself")
    assert topics(received) == [f"{STATE}/ack/by/monitor-icu-b1"]


@pytest.mark.integration
def test_a_station_cannot_clear_or_overwrite_a_retained_alert_state(broker: Mosquitto, pki: Pki) -> None:
    with (
        connected(broker, "wardd", pki.ca.cert) as wardd,
        connected(broker, "station-icu", pki.ca.cert) as station,
    ):
        assert not wardd.publish(STATE, b'{"state": "active"}', retain=True).is_failure
        # MQTT 3.1.1: both are answered with a plain PUBACK, and dropped.
        assert not station.publish(STATE, b"", retain=True).is_failure
        assert not station.publish(STATE, b'{"state": "resolved"}', retain=True).is_failure
        assert not station.publish(f"ward/icu/bed/b1/alerts/{ALERT}-forged", b"{}", retain=True).is_failure
    with connected(broker, "station-icu", pki.ca.cert) as fresh:
        fresh.subscribe("ward/+/bed/+/alerts/+", "ward/cli/station-icu/+")
        # The barrier is published after the subscription: the retained states come first.
        fresh.publish("ward/cli/station-icu/end", b"end")
        received = fresh.wait_for("ward/cli/station-icu/end", b"end")
    assert received == [
        Received(STATE, b'{"state": "active"}', retain=True),
        Received("ward/cli/station-icu/end", b"end", retain=False),
    ]
    # The positive control: wardd can clear it, and a fresh subscriber then gets nothing.
    with connected(broker, "wardd", pki.ca.cert) as wardd:
        wardd.publish(STATE, b"", retain=True)
    with connected(broker, "station-icu", pki.ca.cert) as fresh:
        fresh.subscribe("ward/+/bed/+/alerts/+", "ward/cli/station-icu/+")
        fresh.publish("ward/cli/station-icu/end", b"end")
        assert topics(fresh.wait_for("ward/cli/station-icu/end", b"end")) == ["ward/cli/station-icu/end"]


@pytest.mark.integration
def test_a_station_acknowledges_as_itself_only(broker: Mosquitto, pki: Pki) -> None:
    with (
        connected(broker, "wardd", pki.ca.cert) as wardd,
        connected(broker, "station-icu", pki.ca.cert) as station,
    ):
        wardd.subscribe("ward/+/bed/+/alerts/+/ack", "ward/+/bed/+/alerts/+/ack/by/+")
        station.publish(f"{STATE}/ack/by/nurse-b", b'{"name": "someone else"}')
        station.publish(f"{STATE}/ack/by/entry-icu", b'{"name": "another user"}')
        station.publish(f"{STATE}/ack", b'{"by": "the old form"}')
        station.publish(f"{STATE}/ack/by/station-icu", b'{"name": "Nurse A"}')
        received = wardd.wait_for(f"{STATE}/ack/by/station-icu", b'{"name": "Nurse A"}')
    assert topics(received) == [f"{STATE}/ack/by/station-icu"]


@pytest.mark.integration
def test_each_user_reads_its_own_acknowledgement_replies_only(broker: Mosquitto, pki: Pki) -> None:
    with (
        connected(broker, "wardd", pki.ca.cert) as wardd,
        connected(broker, "station-icu", pki.ca.cert) as station,
        connected(broker, "entry-icu", pki.ca.cert) as entry,
    ):
        for peer in (station, entry):
            peer.subscribe("ward/+/bed/+/alerts/+/ack/by/+/reply", "ward/+/bed/+/alerts/+/ack/reply")
        entry.subscribe("ward/cli/entry-icu/#")
        wardd.publish(f"{STATE}/ack/by/entry-icu/reply", b'{"ok": false}')
        wardd.publish(f"{STATE}/ack/reply", b'{"ok": false, "reason": "unauthenticated"}')
        wardd.publish(f"{STATE}/ack/by/station-icu/reply", b'{"ok": true}')
        # The entry device's fence, after wardd's last reply: a message to itself.
        entry.publish("ward/cli/entry-icu/end", b"end")
        to_station = station.wait_for(f"{STATE}/ack/by/station-icu/reply", b'{"ok": true}')
        to_entry = entry.wait_for("ward/cli/entry-icu/end", b"end")
    # The station also reads the refusals of the old form in its ward; nobody reads
    # another user's reply.
    assert topics(to_station) == [f"{STATE}/ack/reply", f"{STATE}/ack/by/station-icu/reply"]
    assert topics(to_entry) == [f"{STATE}/ack/by/entry-icu/reply", "ward/cli/entry-icu/end"]


@pytest.mark.integration
def test_a_station_reads_its_wards_alerts_and_escalations_only(broker: Mosquitto, pki: Pki) -> None:
    # SUBSCRIBE to everything is granted; the ACL decides message by message at delivery.
    with (
        connected(broker, "wardd", pki.ca.cert) as wardd,
        connected(broker, "monitor-icu-b1", pki.ca.cert) as monitor,
        connected(broker, "station-icu", pki.ca.cert) as station,
    ):
        wardd.publish("ward/haem/bed/7/alerts/7-FEVER-1", b"other ward's state", retain=True)
        station.subscribe("#")
        monitor.publish("ward/icu/bed/b1/vitals", b"vitals")
        wardd.publish("ward/haem/bed/7/alerts", b"other ward's transition")
        wardd.publish("ward/haem/escalations", b"other ward's escalation")
        wardd.publish(STATE, b"state", retain=True)
        wardd.publish("ward/icu/bed/b1/alerts", b"transition")
        wardd.publish("ward/icu/escalations", b"escalation")
        received = station.wait_for("ward/icu/escalations", b"escalation")
    assert topics(received) == [STATE, "ward/icu/bed/b1/alerts", "ward/icu/escalations"]


@pytest.mark.integration
def test_the_cli_barrier_area_is_private_to_its_user(broker: Mosquitto, pki: Pki) -> None:
    with (
        connected(broker, "station-icu", pki.ca.cert) as station,
        connected(broker, "entry-icu", pki.ca.cert) as entry,
    ):
        station.subscribe("ward/cli/#")
        entry.subscribe("ward/cli/#")
        barrier = f"ward/cli/station-icu/{uuid.uuid4().hex}"
        station.publish(barrier, b"1")
        station.publish("ward/cli/entry-icu/x", b"into another's area")
        entry.publish("ward/cli/station-icu/y", b"into another's area")
        entry.publish("ward/cli/entry-icu/end", b"end")
        station.publish(f"{barrier}/end", b"end")
        to_entry = entry.wait_for("ward/cli/entry-icu/end", b"end")
        to_station = station.wait_for(f"{barrier}/end", b"end")
    assert topics(to_station) == [barrier, f"{barrier}/end"]
    assert topics(to_entry) == ["ward/cli/entry-icu/end"]


@pytest.mark.integration
def test_a_retained_acknowledgement_reaches_the_daemon_again_when_it_subscribes(
    broker: Mosquitto, pki: Pki
) -> None:
    # No separate retain permission: whoever may publish an acknowledgement may retain
    # it, and the broker hands it to every later subscription: why the daemon refuses
    # acknowledgements that arrive with the retain flag (test_the_daemon_behind_...).
    with connected(broker, "station-icu", pki.ca.cert) as station:
        station.publish(f"{STATE}/ack/by/station-icu", b'{"name": "Nurse A"}', retain=True)
    with connected(broker, "wardd", pki.ca.cert) as wardd:
        wardd.subscribe("ward/+/bed/+/alerts/+/ack/by/+", "ward/cli/wardd/#")
        wardd.publish("ward/cli/wardd/end", b"end")
        received = wardd.wait_for("ward/cli/wardd/end", b"end")
    assert received == [
        Received(f"{STATE}/ack/by/station-icu", b'{"name": "Nurse A"}', retain=True),
        Received("ward/cli/wardd/end", b"end", retain=False),
    ]


@pytest.mark.integration
def test_user_names_must_be_one_topic_level(tmp_path: Path, pki: Pki) -> None:
    # mosquitto refuses every pattern to a user whose name holds "+" or "#", but puts a
    # name with "/" into the pattern as it is: user "station-icu/reply" may write
    # ".../ack/by/station-icu/reply", the station's replies. README: never make one.
    users = {**PASSWORDS, "station-icu/reply": "pw-slash-0c1e", "any+": "pw-plus-7a90"}
    with (
        secure_mosquitto(
            tmp_path / "mosquitto", ca=pki.ca.cert, cert=pki.cert.cert, key=pki.cert.key, users=users
        ) as broker,
        connected(broker, "station-icu", pki.ca.cert) as station,
        connected(broker, "station-icu/reply", pki.ca.cert, password=users["station-icu/reply"]) as slash,
        connected(broker, "any+", pki.ca.cert, password=users["any+"]) as plus,
    ):
        station.subscribe("ward/+/bed/+/alerts/+/ack/by/+/reply", "ward/cli/station-icu/#")
        plus.publish("ward/cli/station-icu/x", b"into the station's area")
        slash.publish(f"{STATE}/ack/by/station-icu/reply", b'{"ok": true, "forged": true}')
        station.publish("ward/cli/station-icu/end", b"end")
        received = station.wait_for("ward/cli/station-icu/end", b"end")
    assert topics(received) == [f"{STATE}/ack/by/station-icu/reply", "ward/cli/station-icu/end"]


@pytest.mark.integration
def test_an_mqtt5_publisher_is_told_of_a_refusal_an_mqtt311_one_is_not(broker: Mosquitto, pki: Pki) -> None:
    with (
        connected(broker, "monitor-icu-b1", pki.ca.cert, MQTTProtocolVersion.MQTTv5) as v5,
        connected(broker, "monitor-icu-b1", pki.ca.cert, MQTTProtocolVersion.MQTTv311) as v311,
    ):
        refused = v5.publish("ward/icu/bed/b2/vitals", b"forged")
        assert (refused.value, refused.getName()) == (0x87, "Not authorized")
        assert not v5.publish("ward/icu/bed/b1/vitals", b"own").is_failure
        assert v311.publish("ward/icu/bed/b2/vitals", b"forged").value == 0  # dropped all the same


# --- the shipped files ----------------------------------------------------------------------------

SHARED = [
    "persistence",
    "persistence_file",
    "autosave_interval",
    "autosave_on_changes",
    "max_queued_messages",
    "max_queued_bytes",
    "queue_qos0_messages",
    "persistent_client_expiration",
    "max_inflight_messages",
    "max_inflight_bytes",
    "max_packet_size",
]
"""Directives whose values carry the no-loss promise in both broker configurations."""


def _directives(path: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.strip().partition(" ")
            values.setdefault(name, []).append(value.strip())
    return values


def test_the_secure_config_keeps_the_no_loss_settings_of_the_plain_one() -> None:
    plain, secure = _directives(SHIPPED_MOSQUITTO_CONF), _directives(SHIPPED_SECURE_CONF)
    assert {name: secure.get(name) for name in SHARED} == {name: plain[name] for name in SHARED}
    assert secure["allow_anonymous"] == ["false"]
    assert secure["listener"] == ["8883"]
    assert secure["tls_version"] == ["tlsv1.2"]


def test_every_acl_topic_is_under_the_default_prefix() -> None:
    # README: a site with another mqtt.topic_prefix edits the first level of every line.
    lines = [line.split() for line in SHIPPED_ACL.read_text().splitlines() if line.strip() and line[0] != "#"]
    topics_in_acl = [words[-1] for words in lines if words[0] in ("topic", "pattern")]
    assert topics_in_acl
    assert [topic for topic in topics_in_acl if not topic.startswith("ward/")] == []
    assert all(words[0] in ("topic", "pattern", "user") for words in lines)


def test_the_test_users_are_the_acl_files_users() -> None:
    users = [line.split()[1] for line in SHIPPED_ACL.read_text().splitlines() if line.startswith("user ")]
    assert sorted(users) == sorted(PASSWORDS)


# --- the daemon behind the locked-down broker ---------------------------------------------------


def _ward_config(folder: Path, broker: Mosquitto, ca: Path) -> Path:
    """wardd as user ``wardd`` over TLS, ward icu beds b1 and b2, points to a local file."""
    password = folder / "wardd-password"
    password.write_text(PASSWORDS["wardd"] + "\n")
    return write_ward_config(
        folder / "ward.toml",
        mqtt_url=f"mqtts://{broker.host}:{broker.port}",
        ward="icu",
        beds=["b1", "b2"],
        daemon="tick_interval_s = 0.5",
        mqtt=f"""username = "wardd"
password.file = "{password}"
tls.ca_file = "{ca}"
reconnect_min_s = 0.1
reconnect_max_s = 1.0""",
        tables="""
[alerts]
ack_users = ["station-icu"]

[thresholds.vitals]
confirm_samples = 2
fever_delay_s = 1.0
telemetry_stale_s = 86400.0
""",
    )


def _station_config(folder: Path, broker: Mosquitto, ca: Path) -> Path:
    """What a nursing station needs for ``wardd ack``: the broker, its login, the CA."""
    password = folder / "station-password"
    password.write_text(PASSWORDS["station-icu"])
    path = folder / "station.toml"
    path.write_text(
        f"""
[mqtt]
url = "mqtts://{broker.host}:{broker.port}"
username = "station-icu"
password.file = "{password}"
tls.ca_file = "{ca}"
"""
    )
    return path


def _fever(seconds_ago: float) -> bytes:
    ts = (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()
    return json.dumps(
        {"ts": ts, "device": "mon-b1", "obs": [{"code": "MDC_TEMP_BODY", "value": 38.6, "unit": "Cel"}]}
    ).encode()


def _alert_events(station: Peer) -> list[dict[str, Any]]:
    with station._changed:
        received = list(station.received)
    return [json.loads(m.payload) for m in received if m.topic.endswith("/alerts")]


@pytest.mark.integration
def test_the_daemon_behind_the_locked_down_broker(tmp_path: Path, broker: Mosquitto, pki: Pki) -> None:
    """Vitals only from the bed's own monitor; acknowledgements only by listed users, under
    the name the broker authenticated; a retained acknowledgement is not carried out again."""
    config = _ward_config(tmp_path, broker, pki.ca.cert)
    daemon = WarddProcess(config, tmp_path / "wardd.log")
    daemon.start()
    try:
        daemon.wait_connected()
        with (
            connected(broker, "station-icu", pki.ca.cert) as station,
            connected(broker, "monitor-icu-b1", pki.ca.cert) as monitor,
        ):
            station.subscribe("ward/icu/bed/+/alerts", "ward/+/bed/+/alerts/+/ack/by/station-icu/reply")
            monitor.subscribe("ward/+/bed/+/alerts/+/ack/by/monitor-icu-b1/reply")
            # The monitor of b1 reports a fever for its own bed and, refused by the broker, for b2.
            for seconds_ago in (4, 2, 0):
                monitor.publish("ward/icu/bed/b2/vitals", _fever(seconds_ago))
                monitor.publish("ward/icu/bed/b1/vitals", _fever(seconds_ago))
            poll_until(lambda: any(e["condition"] == "FEVER" for e in _alert_events(station)), 20, "FEVER")
            [fever] = [e for e in _alert_events(station) if e["condition"] == "FEVER"]
            assert fever["bed"] == "b1"
            aid = fever["id"]

            # The monitor may publish an acknowledgement as itself (the ACL's pattern), but
            # it is not a listed user: refused, with a reply only it can read.
            refused = monitor.publish(f"ward/icu/bed/b1/alerts/{aid}/ack/by/monitor-icu-b1", b"{}")
            assert not refused.is_failure
            reply_topic = f"ward/icu/bed/b1/alerts/{aid}/ack/by/monitor-icu-b1/reply"
            poll_until(lambda: reply_topic in topics(monitor.received), 10, "the refusal")
            [reply] = [json.loads(m.payload) for m in monitor.received if m.topic == reply_topic]
            assert (reply["ok"], reply["reason"]) == (False, "not_allowed")

            # The station acknowledges with `wardd ack` and its own login; --by is a display name.
            result = wardd(
                "ack",
                "--config",
                str(_station_config(tmp_path, broker, pki.ca.cert)),
                aid,
                "--by",
                "A. Martin",
            )
            assert result.returncode == 0, result.stderr
            assert (
                f"acknowledged {aid} (icu/b1) by station-icu (A. Martin): now acknowledged" in result.stdout
            )
            poll_until(lambda: any(e["phase"] == "ack" for e in _alert_events(station)), 10, "the ack")
            [ack] = [e for e in _alert_events(station) if e["phase"] == "ack"]
            assert (ack["acked_by"], ack["acked_name"]) == ("station-icu", "A. Martin")

            # A retained acknowledgement is carried out when live (the alert is already
            # acknowledged: nothing changes) and refused when the broker hands it back to
            # the daemon's next subscription.
            station.publish(f"ward/icu/bed/b1/alerts/{aid}/ack/by/station-icu", b"{}", retain=True)
            mine = f"ward/icu/bed/b1/alerts/{aid}/ack/by/station-icu/reply"
            poll_until(lambda: topics(station.received).count(mine) == 2, 10, "the live retained ack's reply")
            last = json.loads([m.payload for m in station.received if m.topic == mine][-1])
            assert (last["ok"], last["state"], last["by"]) == (True, "acknowledged", "station-icu")
        assert "retained_command" not in daemon.output()
        assert daemon.terminate() == 0
        daemon.start()
        daemon.wait_connected()
        poll_until(lambda: "retained_command" in daemon.output(), 10, "the retained acknowledgement refused")
        assert daemon.terminate() == 0
    finally:
        daemon.close()

    points = (tmp_path / "state" / "spool" / "points.lp").read_text()
    vitals = [line for line in points.splitlines() if line.startswith("vitals,")]
    assert any("bed=b1" in line for line in vitals), "the positive control: b1's vitals were stored"
    assert not any("bed=b2" in line for line in vitals), "b1's monitor wrote b2's vitals"
    with sqlite3.connect(tmp_path / "state" / "wardd.sqlite") as db:
        entries = [json.loads(row[0]) for row in db.execute("SELECT entry FROM journal ORDER BY seq")]
    acks = [(e["who"], e["name"], e["id"]) for e in entries if e["what"] == "ack"]
    assert acks == [("station-icu", "A. Martin", aid)]
