"""No-loss acceptance tests: a real `wardd run`, the shipped broker config, a real influxd.

Each test publishes vitals at QoS 1 with paho-mqtt and counts as *sent* only what the
broker confirmed (PUBACK); *stored* is the number of those (bed, measurement time)
found in influxd once the count stops rising; ``lost = sent - stored``; *duplicated*
is rows for one (bed, time) beyond the first (InfluxDB overwrites a point of the same
series and time, so a duplicate row means the daemon wrote it under other tags). The
daemon's own count of accepted vitals is reported too (re-deliveries show there).

Faults: hostile payloads on every inbound topic, tag values that break line
protocol, a burst, SIGKILL (twice, once during an influxd outage), a daemon outage
longer than mosquitto's default queue, SIGTERM under load.

Sizes: the suite sizes keep this file under ~3 minutes on a 2-core machine;
``WARDD_FULL_NOLOSS=1`` (``scripts/no-loss-full``) runs the full sizes.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests import servers
from tests.servers import Influxd, Mosquitto
from tests.ward_load import (
    DATABASE,
    FULL_ENV,
    MAX_UNCONFIRMED,
    WARD,
    Sample,
    Tally,
    VitalsPublisher,
    WarddProcess,
    bed_ids,
    connect,
    counter_total,
    daemon_counters,
    epoch_ns,
    iso_us,
    poll_until,
    retained_alerts,
    settle,
    settle_stored,
    status_open_alerts,
    stored_rows,
    stored_vitals,
    tally,
    vitals_payload,
    write_load_config,
)

pytestmark = pytest.mark.integration

FULL = os.environ.get(FULL_ENV) == "1"

MEASUREMENTS = {"vitals", "infusion", "dose", "alerts", "wardd_counters"}
"""Every measurement the daemon writes (README, Storage)."""

# Physiologically possible ranges (MIMIC-III, README "Vital signs"): (low exclusive,
# high, high inclusive). Written out here, not imported, so the test judges the daemon.
PLAUSIBLE: dict[str, tuple[float, float, bool]] = {
    "temp_c": (10.0, 50.0, False),
    "sbp_mmhg": (0.0, 400.0, False),
    "dbp_mmhg": (0.0, 300.0, False),
    "map_mmhg": (0.0, 300.0, False),
    "hr_per_min": (0.0, 300.0, False),
    "spo2_pct": (0.0, 100.0, True),
    "rr_per_min": (0.0, 70.0, False),
}


def size(suite: int, full: int) -> int:
    """The suite size, or the full one under ``WARDD_FULL_NOLOSS=1``."""
    return full if FULL else suite


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private mosquitto running ``config/mosquitto.conf`` (port, persistence, log replaced)."""
    with servers.shipped_mosquitto(tmp_path / "mosquitto") as server:
        yield server


@pytest.fixture
def influx(influx1: Influxd) -> Influxd:
    """The private influxd with the daemon's database created."""
    influx1.create_database(DATABASE)
    return influx1


@pytest.fixture
def daemons() -> Iterator[list[WarddProcess]]:
    """Daemon processes a test starts; any still running is killed at the end."""
    started: list[WarddProcess] = []
    yield started
    for daemon in started:
        daemon.close()


def start_daemon(
    tmp_path: Path,
    broker: Mosquitto,
    influx: Influxd,
    prefix: str,
    beds: list[str],
    daemons: list[WarddProcess],
) -> WarddProcess:
    """Write the ward config, start `wardd run` and wait for its subscriptions."""
    config = write_load_config(
        tmp_path / "ward.toml", mqtt_url=broker.url, prefix=prefix, influx_url=influx.url, beds=beds
    )
    daemon = WarddProcess(config, tmp_path / "wardd.log")
    daemons.append(daemon)
    daemon.start()
    daemon.wait_connected()
    return daemon


def finish(
    daemon: WarddProcess, influx: Influxd, beds: list[str], sent: set[Sample], note: str = ""
) -> Tally:
    """Wait for storage to settle, stop the daemon in order (it exports its counters), tally."""
    settle_stored(influx, beds, sent, timeout_s=900.0 if FULL else 120.0)
    alive = daemon.alive
    code = daemon.terminate() if alive else daemon.proc.returncode if daemon.proc else None
    accepted = daemon_counters(influx).get(("mqtt.accepted", "vitals"))
    note = f"{note} daemon alive at the end: {alive}, exit code {code}".strip()
    result = tally(sent, stored_vitals(influx, beds), accepted, note)
    # Shown for passing tests too with `pytest -rP` (scripts/no-loss-full): the figures to report.
    print(f"no-loss figures: {result}")
    return result


def measurements(influx: Influxd) -> set[str]:
    """``SHOW MEASUREMENTS``."""
    return {str(row["name"]) for row in influx.query(DATABASE, "SHOW MEASUREMENTS")}


def implausible_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored vitals rows with a value outside ``PLAUSIBLE``, an unknown field, or a tag that is not printable."""
    bad = []
    for row in rows:
        for key, value in row.items():
            if key in {"time"} or value is None:
                continue
            if key in {"ward", "bed", "device"}:
                if not (isinstance(value, str) and value and value.isprintable()):
                    bad.append(row)
                    break
                continue
            bounds = PLAUSIBLE.get(key)
            if bounds is None or not isinstance(value, int | float) or isinstance(value, bool):
                bad.append(row)
                break
            low, high, inclusive = bounds
            if not (low < value and (value <= high if inclusive else value < high)):
                bad.append(row)
                break
    return bad


def tail(daemon: WarddProcess, chars: int = 2500) -> str:
    """The end of the daemon's log, for a failure message."""
    return daemon.output()[-chars:]


# ---------------------------------------------------------------------------------------
# Hostile payloads
# ---------------------------------------------------------------------------------------

CODES = ["MDC_TEMP_BODY", "MDC_PRESS_BLD_NONINV_SYS", "MDC_ECG_HEART_RATE", "MDC_PULS_OXIM_SAT_O2", 150456]
UNITS = ["Cel", "[degF]", "mm[Hg]", "/min", "%", "K"]

control_text = st.text(alphabet=st.characters(max_codepoint=0x9F, categories=["Cc"]), min_size=1, max_size=8)
hostile_text = (
    st.text(max_size=80)
    | control_text
    | st.builds(lambda a, b: f"mon{a}itor{b}", control_text, st.sampled_from(["", "\\", "\n", ","]))
    | st.sampled_from(["\u0000\n", "monitor\\", "a\nb", "x y,z=1", "\ud800", "\\", "\u2028", "🛏"])
)
hostile_number = (
    st.integers()
    | st.integers(min_value=10**300, max_value=10**420)
    | st.integers(max_value=-(10**300), min_value=-(10**420))
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([8388607, 8388608, 8388606, 1e308, -0.0, 5e-324, 2**63, 2**64 + 1])
)
json_leaf = st.none() | st.booleans() | hostile_number | hostile_text
json_any = st.recursive(
    json_leaf,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(hostile_text, children, max_size=4),
    max_leaves=12,
)


def _recent_ts(offset_s: int) -> str:
    return iso_us(datetime.now(UTC) + timedelta(seconds=offset_s))


timestamps = (
    st.integers(-7200, 900).map(_recent_ts)
    | st.sampled_from(
        ["2026-13-45T99:99:99Z", "2026-03-02T20:00:00", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", ""]
    )
    | json_any
)
observation = st.fixed_dictionaries(
    {
        "code": st.sampled_from(CODES) | json_any,
        "value": hostile_number | json_any,
        "unit": st.sampled_from(UNITS) | hostile_text,
    },
    optional={"extra": json_any},
)
vitals_like = st.fixed_dictionaries(
    {
        "ts": timestamps,
        "device": hostile_text | json_any,
        "obs": st.lists(observation, max_size=6) | json_any,
    },
    optional={"extra": json_any},
)
observation_like = st.fixed_dictionaries(
    {},
    optional={
        "o2_flow_l_per_min": hostile_number | json_any,
        "o2_device": st.sampled_from(["air", "cpap", "nasal_cannula"]) | hostile_text,
        "vasopressors": hostile_number,
        "acvpu": st.sampled_from(["A", "C", "V", "P", "U"]) | hostile_text,
        "ice_score": hostile_number,
        "handwriting": hostile_text,
        "by": hostile_text | json_any,
        "time": timestamps,
    },
)
bag_like = st.fixed_dictionaries(
    {
        "bag_id": hostile_text | json_any,
        "concentration_ug_per_ml": hostile_number | json_any,
        "hung_at": timestamps,
    },
    optional={"volume_ml": hostile_number},
)
ack_like = st.fixed_dictionaries({"by": hostile_text | json_any}, optional={"extra": json_any})


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def _vitals_with(obs_value: str) -> bytes:
    return (
        f'{{"ts": "{_recent_ts(-60)}", "device": "m", "obs": '
        f'[{{"code": "MDC_TEMP_BODY", "value": {obs_value}, "unit": "Cel"}}]}}'
    ).encode()


payload_bodies = st.one_of(
    st.binary(max_size=2048),
    vitals_like.map(_dumps),
    observation_like.map(_dumps),
    bag_like.map(_dumps),
    ack_like.map(_dumps),
    json_any.map(_dumps),
    st.tuples(st.integers(500, 30_000), st.sampled_from(["list", "dict"])).map(lambda t: _nested(*t)),
    st.integers(65_537, 200_000).map(lambda n: b'{"pad": "' + b"x" * n + b'"}'),
    st.integers(310, 5000).map(lambda digits: _vitals_with("9" * digits)),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]).map(_vitals_with),
    st.tuples(vitals_like.map(_dumps), st.binary(min_size=1, max_size=4)).map(
        lambda t: t[0][: len(t[0]) // 2] + b"\xff\xfe" + t[1] + t[0][len(t[0]) // 2 :]
    ),
)

# Deterministic examples of each hostile kind, sent whatever hypothesis draws.
FIXED_HOSTILE: list[tuple[str, bytes]] = [
    ("vitals", _nested(5000, "list")),
    ("vitals", _nested(5000, "dict")),
    ("observations", _nested(5000, "list")),
    ("ack", _nested(5000, "dict")),
    ("vitals", _vitals_with("1" + "0" * 400)),
    ("vitals", _vitals_with("1e999")),
    ("vitals", _vitals_with("NaN")),
    ("vitals", b'{"ts": "\xff\xfe", "device": "m", "obs": []}'),
    ("vitals", b'{"pad": "' + b"x" * 70_000 + b'"}'),
    ("infusion/bag", _dumps({"bag_id": "b", "concentration_ug_per_ml": 10**400, "hung_at": _recent_ts(-5)})),
    ("observations", _dumps({"o2_flow_l_per_min": 10**400, "time": _recent_ts(-5)})),
    ("observations", _dumps({"ice_score": 10**400})),
]


def hostile_topic(prefix: str, kind: str, bed: str, alert_id: str) -> str:
    """The inbound topic of one kind for ``bed``."""
    base = f"{prefix}/{WARD}/bed/{bed}"
    if kind == "ack":
        return f"{base}/alerts/{alert_id}/ack/by/station-h"
    return f"{base}/alerts/{alert_id}/ack" if kind == "unproven-ack" else f"{base}/{kind}"


def generate_hostile(count: int, prefix: str, beds: list[str]) -> list[tuple[str, bytes]]:
    """``count`` hypothesis-drawn (topic, payload) pairs over every inbound topic of ``beds``."""
    drawn: list[tuple[str, bytes]] = []
    message = st.tuples(
        st.sampled_from(["vitals", "observations", "infusion/bag", "ack", "unproven-ack"]),
        st.sampled_from(beds),
        st.sampled_from(["a-1", "no-such-id", "x" * 40]),
        payload_bodies,
    )

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(message)
    def collect(drawn_message: tuple[str, str, str, bytes]) -> None:
        kind, bed, alert_id, body = drawn_message
        drawn.append((hostile_topic(prefix, kind, bed, alert_id), body))

    collect()
    return drawn


def publish_all(url: str, messages: list[tuple[str, bytes]]) -> int:
    """Publish at QoS 1 and wait for every confirmation; how many the broker confirmed."""
    client = connect(url)
    try:
        infos: list[paho.MQTTMessageInfo] = []
        for topic, body in messages:
            if len(infos) >= MAX_UNCONFIRMED:
                # Packet ids are 16-bit: wait for an old one before taking a new one.
                with contextlib.suppress(RuntimeError, ValueError):
                    infos[len(infos) - MAX_UNCONFIRMED].wait_for_publish(300)
            infos.append(client.publish(topic, body, qos=1))
        deadline = time.monotonic() + 300
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        return sum(1 for info in infos if info.is_published())
    finally:
        client.disconnect()
        client.loop_stop()


def test_hostile_payloads_on_every_inbound_topic(
    tmp_path: Path, broker: Mosquitto, influx: Influxd, prefix: str, daemons: list[WarddProcess]
) -> None:
    beds = bed_ids(3)
    daemon = start_daemon(tmp_path, broker, influx, prefix, beds, daemons)
    hostile = [(hostile_topic(prefix, kind, "1", "a-1"), body) for kind, body in FIXED_HOSTILE]
    hostile += generate_hostile(size(2_000, 100_000), prefix, beds)
    hostile_sent = publish_all(broker.url, hostile)

    good = VitalsPublisher(
        broker.url, prefix, beds, per_bed=40, first_time=datetime.now(UTC) - timedelta(minutes=30), step_s=1.0
    ).start()
    good.join()
    sent = good.sent
    # The good messages wait behind every hostile one, which store nothing: no quiet period.
    # Valid hostile vitals are stored for the same beds too, so count exactly what was sent.
    timeout_s = 1800.0 if FULL else 120.0
    settle(
        lambda: len(sent & set(stored_vitals(influx, beds))),
        len(sent),
        timeout_s=timeout_s,
        quiet_s=timeout_s,
        every_s=5.0,
    )
    alive = daemon.alive
    good_stored = stored_vitals(influx, beds, device=None)
    result = tally(sent, collections.Counter({s: n for s, n in good_stored.items() if s in sent}))
    print(f"no-loss figures: hostile sent={hostile_sent}; good {result}")
    log_tail = tail(daemon)
    code = daemon.terminate() if alive else daemon.proc.returncode if daemon.proc else None
    counters = daemon_counters(influx)
    refusals = {k: v for k, v in counters.items() if k[0] in {"mqtt.rejected", "alerts.ack_rejected"}}
    handled = (
        counter_total(counters, "mqtt.rejected")
        + counter_total(counters, "alerts.ack_rejected")
        + counter_total(counters, "mqtt.accepted")
        + counter_total(counters, "alerts.acks")
        # Hypothesis repeats payloads: a repeat on the same topic is a recognised duplicate.
        + counter_total(counters, "mqtt.duplicates")
    )
    summary = (
        f"hostile sent={hostile_sent} of {len(hostile)}; good {result}; daemon alive={alive} exit={code}; "
        f"refusals={dict(sorted(refusals.items()))}\n{log_tail}"
    )

    assert alive, f"the daemon died on hostile input: {summary}"
    assert code == 0, summary
    assert hostile_sent == len(hostile), summary
    assert result.lost == 0, summary
    assert result.duplicated == 0, summary
    bad_rows = implausible_rows(stored_rows(influx, beds))
    assert not bad_rows, (
        f"{len(bad_rows)} implausible or unprintable stored row(s), e.g. {bad_rows[:3]}; {summary}"
    )
    assert measurements(influx) <= MEASUREMENTS, f"{measurements(influx)}; {summary}"
    # Every message was handled: accepted (whole or in part) or refused with a reason.
    assert handled >= hostile_sent + result.sent, f"handled={handled}; {summary}"
    unstable = [k for k in refusals if not re.fullmatch(r"[a-z][a-z0-9_]*", k[1])]
    assert not unstable, f"refusals without a stable reason: {unstable}; {summary}"
    for reason in ("invalid_json", "too_large"):
        assert counters.get(("mqtt.rejected", reason), 0) >= 1, f"{reason} not counted; {summary}"


# ---------------------------------------------------------------------------------------
# Poison tag values
# ---------------------------------------------------------------------------------------


def test_a_poison_device_name_loses_no_good_point(
    tmp_path: Path, broker: Mosquitto, influx: Influxd, prefix: str, daemons: list[WarddProcess]
) -> None:
    beds = ["1"]
    daemon = start_daemon(tmp_path, broker, influx, prefix, beds, daemons)
    topic = f"{prefix}/{WARD}/bed/1/vitals"
    first = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    good: list[Sample] = []
    messages: list[tuple[str, bytes]] = []
    poison = {10: "\u0000\n", 10 + 62: "mon\nitor", 10 + 124: "monitor\\"}
    k = 0
    for i in range(10 + 186 + len(poison)):
        when = first + timedelta(seconds=i)
        if i in poison:
            body = json.loads(vitals_payload("1", when, i, febrile=False))
            body["device"] = poison[i]
            messages.append((topic, json.dumps(body).encode()))
        else:
            messages.append((topic, vitals_payload("1", when, k, febrile=False)))
            good.append(Sample("1", epoch_ns(when)))
            k += 1
    assert len(good) == 196
    client = connect(broker.url)
    try:
        infos = [client.publish(t, body, qos=1) for t, body in messages]
        for info in infos:
            info.wait_for_publish(60)
        good_infos = [info for n, info in enumerate(infos) if n not in poison]
        sent = {s for s, info in zip(good, good_infos, strict=True) if info.is_published()}
    finally:
        client.disconnect()
        client.loop_stop()
    settle_stored(influx, beds, sent, timeout_s=60.0)
    alive = daemon.alive
    stored = stored_vitals(influx, beds, device="monitor-1")
    opened, status_text = status_open_alerts(daemon.config)
    retained = retained_alerts(broker.url, prefix)
    result = finish(daemon, influx, beds, sent)
    result = tally(sent, stored, result.daemon_accepted, result.note)
    counters = daemon_counters(influx)
    refused = {
        (name, reason): v
        for (name, reason), v in counters.items()
        if (name == "mqtt.rejected" or "dead" in name) and reason not in {"", "-"}
    }
    found = measurements(influx)
    rows = stored_rows(influx, beds)
    summary = (
        f"{result}; measurements={sorted(found)}; refused={refused}; "
        f"influx.rejected={counter_total(counters, 'influx.rejected')}; "
        f"devices stored={sorted({str(r.get('device')) for r in rows})!r}\n{tail(daemon)}"
    )

    assert alive, summary
    assert result.lost == 0, summary
    assert result.duplicated == 0, summary
    assert found <= MEASUREMENTS, f"a tag value split a line into another measurement: {summary}"
    assert not implausible_rows(rows), f"unprintable tag stored: {summary}"
    storage_open = [a for a in opened | retained if a.condition == "STORAGE_UNAVAILABLE"]
    assert not storage_open, f"still STORAGE_UNAVAILABLE: {storage_open}; {status_text}; {summary}"
    assert sum(refused.values()) >= len(poison), (
        f"the poison input was neither refused nor dead-lettered: {summary}"
    )


# ---------------------------------------------------------------------------------------
# Burst, outages, signals
# ---------------------------------------------------------------------------------------


def test_a_burst_is_stored_whole(
    tmp_path: Path, broker: Mosquitto, influx: Influxd, prefix: str, daemons: list[WarddProcess]
) -> None:
    beds = bed_ids(25)
    total = size(10_000, 100_000)
    daemon = start_daemon(tmp_path, broker, influx, prefix, beds, daemons)
    publisher = VitalsPublisher(
        broker.url,
        prefix,
        beds,
        per_bed=total // len(beds),
        first_time=datetime.now(UTC) - timedelta(hours=2),
        step_s=0.01,
    ).start()
    publisher.join()
    result = finish(daemon, influx, beds, publisher.sent)
    assert result.sent == total, result
    assert result.lost == 0, result
    assert result.duplicated == 0, result


def test_kill_9_twice_once_during_an_influxd_outage(
    tmp_path: Path, broker: Mosquitto, influx: Influxd, prefix: str, daemons: list[WarddProcess]
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    beds = bed_ids(30)
    febrile = frozenset(beds[:5])
    duration_s = size(50, 240)
    daemon = start_daemon(tmp_path, broker, influx, prefix, beds, daemons)
    publisher = VitalsPublisher(
        broker.url,
        prefix,
        beds,
        per_bed=duration_s,
        first_time=datetime.now(UTC),
        step_s=1.0,
        rate_hz=1.0,
        febrile=febrile,
    ).start()
    began = time.monotonic()
    # Random instants, each just after a round of 30 messages so that some are inside the daemon.
    first_kill_s = (
        publisher.sleep_until_just_after_round(
            began + (rng.uniform(5, 12) if not FULL else rng.uniform(20, 80)), rng
        )
        - began
    )
    daemon.kill()
    daemon.start()
    daemon.wait_connected()

    outage_s = rng.uniform(10, 20)
    time.sleep(rng.uniform(3, 6))
    influx.stop()
    outage_began = time.monotonic()
    second_kill_s = (
        publisher.sleep_until_just_after_round(outage_began + rng.uniform(2, outage_s - 4), rng) - began
    )
    daemon.kill()
    daemon.start()
    daemon.wait_connected()
    time.sleep(max(0.0, outage_began + outage_s - time.monotonic()))
    influx.start()

    publisher.join()
    note = (
        f"seed={seed} kills at {first_kill_s:.1f} s and {second_kill_s:.1f} s, influxd down {outage_s:.1f} s"
    )
    settle_stored(influx, beds, publisher.sent, timeout_s=900.0 if FULL else 120.0)

    # Alerts after the final restart: the retained states and `wardd status` agree.
    views: dict[str, set[Any]] = {}

    def alert_views_agree() -> bool:
        views["retained"] = retained_alerts(broker.url, prefix)
        views["status"], _ = status_open_alerts(daemon.config)
        return views["retained"] == views["status"]

    agree = True
    try:
        poll_until(alert_views_agree, 30, "retained alerts and `wardd status` to agree", every_s=1.0)
    except AssertionError:
        agree = False
    result = finish(daemon, influx, beds, publisher.sent, note)
    fevers = {a.bed for a in views["status"] if a.condition == "FEVER"}
    alerts_note = (
        f"retained-only={sorted(views['retained'] - views['status'])} "
        f"status-only={sorted(views['status'] - views['retained'])}"
    )
    assert result.lost == 0, f"{result}; {alerts_note}"
    assert result.duplicated == 0, result
    assert fevers == set(febrile), f"open FEVER alerts at beds {sorted(fevers)}; {result}"
    assert agree, f"retained alert states and `wardd status` disagree: {alerts_note}; {result}"


def paced_publisher(
    broker: Mosquitto, prefix: str, beds: list[str], rate_hz: float, duration_s: float
) -> VitalsPublisher:
    """Every bed at ``rate_hz`` for ``duration_s``, measurement times following the clock, started."""
    return VitalsPublisher(
        broker.url,
        prefix,
        beds,
        per_bed=round(duration_s * rate_hz),
        first_time=datetime.now(UTC),
        step_s=1.0 / rate_hz,
        rate_hz=rate_hz,
    ).start()


def test_a_daemon_outage_longer_than_mosquittos_default_queue_loses_nothing(
    tmp_path: Path, broker: Mosquitto, influx: Influxd, prefix: str, daemons: list[WarddProcess]
) -> None:
    beds = bed_ids(30)
    rate_hz = 1.0 if FULL else 10.0
    down_s = 120.0 if FULL else 8.0
    duration_s = 180.0 if FULL else 20.0
    daemon = start_daemon(tmp_path, broker, influx, prefix, beds, daemons)
    publisher = paced_publisher(broker, prefix, beds, rate_hz, duration_s)
    began = time.monotonic()
    time.sleep(max(0.0, began + (20.0 if FULL else 4.0) - time.monotonic()))
    code = daemon.terminate()
    stopped = time.monotonic()
    time.sleep(down_s)
    restarted = time.monotonic()
    daemon.start()
    daemon.wait_connected()
    publisher.join()
    queued = publisher.sent_between(stopped, restarted)
    result = finish(
        daemon, influx, beds, publisher.sent, f"exit code at stop {code}, {queued} published while down"
    )
    assert queued > 1000, f"the outage must queue more than mosquitto's default 1000: {result}"
    assert result.lost == 0, result
    assert result.duplicated == 0, result


def test_sigterm_under_load_loses_nothing(
    tmp_path: Path, broker: Mosquitto, influx: Influxd, prefix: str, daemons: list[WarddProcess]
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    beds = bed_ids(30)
    rate_hz = 20.0  # 600 messages/s: near what the daemon handles on 2 cores, so it has a backlog
    duration_s = size(15, 120)
    daemon = start_daemon(tmp_path, broker, influx, prefix, beds, daemons)
    publisher = paced_publisher(broker, prefix, beds, rate_hz, duration_s)
    began = time.monotonic()
    at_s = rng.uniform(5, 10) if not FULL else rng.uniform(10, duration_s - 20)
    time.sleep(max(0.0, began + at_s - time.monotonic()))
    code = daemon.terminate()
    daemon.start()
    daemon.wait_connected()
    publisher.join()
    result = finish(
        daemon, influx, beds, publisher.sent, f"seed={seed} SIGTERM at {at_s:.1f} s, exit code {code}"
    )
    assert code == 0, result
    assert result.lost == 0, result
    assert result.duplicated == 0, result
