"""Pump servers over HL7 v2 (IHE PCD-01 ORU^R01 over MLLP): infusion rate and volume become
the same pump readings as a serial pump's, for the dose ledger; a reading is filed whole or
refused with AE and the reason. Messages are built with hl7apy (``tests/pump_server.py``),
independent of python-hl7, which the daemon parses with."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.clinical.dose import DOSE_RATE_HIGH, INFUSION_INTERRUPTED, dose_rules
from daemon.clock import ManualClock
from daemon.config import Config, parse
from daemon.errors import ConfigError
from daemon.events import Event, Health, PumpReading, PumpState, SourceHealth, Tick
from daemon.hl7 import hl7in, hl7pump
from tests import pump_server
from tests.codec_fuzz import hl7_pieces
from tests.helpers import run, write_ward_config
from tests.mqtt_watch import until, watch
from tests.pump_server import CURRENT, DEVICE, ML, ML_PER_H, PROGRAMMED, TO_BE_INFUSED, VOLUME, Row, rows
from tests.servers import Mosquitto, free_port
from tests.ward_load import WarddProcess

NOW = datetime(2026, 3, 2, 12, 1, tzinfo=UTC)
AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def _config(
    pumps: list[dict[str, Any]] | None = None, *, more: Mapping[str, Any] | None = None, **hl7: Any
) -> Config:
    beds = [
        {
            "ward": "w1",
            "id": bed,
            "patient": patient,
            "weight_kg": 63,
            "height_cm": 165,
            "protocol_start": START.isoformat(),
        }
        for bed, patient in (("b1", "P-1"), ("b2", "P-2"))
    ]
    if pumps is None:
        pumps = [{"id": "p1", "bed": "b1", "driver": "hl7", "device": DEVICE}]
    return parse({"hl7": {"port": 0, **hl7}, "beds": beds, "pumps": pumps, **(more or {})})


PUMPS = hl7pump.Hl7Pumps.from_config(_config())


def decode(text: str, pumps: hl7pump.Hl7Pumps = PUMPS) -> hl7in.Decoded:
    message = hl7in.parse(text.encode(), "mllp")
    return hl7pump.decode(message, where="mllp", now=NOW, pumps=pumps)


def reading(decoded: hl7in.Decoded) -> PumpReading:
    [event] = decoded.events
    assert isinstance(event, PumpReading)
    return event


def refused(text: str, pumps: hl7pump.Hl7Pumps = PUMPS) -> hl7in.Hl7Error:
    with pytest.raises(hl7in.Hl7Error) as caught:
        decode(text, pumps)
    return caught.value


# --------------------------------------------------------------------------- mapping


def test_a_pump_message_is_the_reading_of_the_pump_its_mds_names() -> None:
    decoded = decode(pump_server.pump_message(*rows(programmed=10, current=10, volume=5.5)))
    assert decoded.control_id == "P1"
    assert decoded.rejected == ()
    assert reading(decoded) == PumpReading(
        ward="w1",
        bed="b1",
        pump="p1",
        time=AT,
        state=PumpState.INFUSING,
        rate_ml_per_h=10.0,
        volume_infused_ml=5.5,
    )


@pytest.mark.parametrize(
    ("current", "state"),
    [("0", PumpState.STOPPED), ("0.001", PumpState.INFUSING)],
    ids=["zero-stopped", "just-above-zero-infusing"],
)
def test_the_current_rate_says_whether_the_pump_infuses(current: str, state: PumpState) -> None:
    got = reading(decode(pump_server.pump_message(Row(CURRENT, current, ML_PER_H))))
    assert got.state is state
    assert got.rate_ml_per_h == float(current)  # no programmed rate: the current one
    assert got.volume_infused_ml is None


def test_a_stopped_pump_keeps_its_programmed_rate_as_a_serial_pump_reports_it() -> None:
    got = reading(decode(pump_server.pump_message(*rows(programmed=10, current=0, volume=3))))
    assert (got.state, got.rate_ml_per_h, got.volume_infused_ml) == (PumpState.STOPPED, 10.0, 3.0)


@pytest.mark.parametrize(
    ("own", "mds_device"),
    [
        ("", DEVICE),  # the MDS row's OBX-18, inherited down the containment tree
        (f"{DEVICE}^^{DEVICE}^EUI-64", None),  # the row's own OBX-18, no MDS device
        (f"label^^{DEVICE}^EUI-64", None),  # by its universal id (the EUI-64)
        (f"{DEVICE}", "FFFF000000000000"),  # the row's own wins over its MDS's
    ],
    ids=["from-mds", "own", "universal-id", "own-over-mds"],
)
def test_the_device_comes_from_obx18_or_from_its_mds_row(own: str, mds_device: str | None) -> None:
    text = pump_server.pump_message(Row(CURRENT, "10", ML_PER_H, device=own), device=mds_device)
    assert reading(decode(text)).pump == "p1"


@pytest.mark.parametrize(
    ("unit", "reason"),
    [
        (ML_PER_H, None),
        ("265266^MDC_DIM_MILLI_L_PER_HR^MDC^mL/h^mL/h^UCUM", None),
        ("^^^mL/h^mL/h^UCUM", None),  # a UCUM unit alone
        ("^^^ml/h^ml/h^UCUM", None),  # UCUM's "l" is the litre too
        ("", "missing_unit"),
        ("999999^MDC_DIM_SOMETHING^MDC", "unknown_unit"),
        ("^^^mL/min^mL/min^UCUM", "wrong_unit"),  # a rate unit, never converted
        (ML, "wrong_unit"),  # a volume unit on a rate
    ],
)
def test_a_rate_needs_its_unit_from_obx6_never_an_assumed_one(unit: str, reason: str | None) -> None:
    text = pump_server.pump_message(Row(CURRENT, "10", unit))
    if reason is None:
        assert reading(decode(text)).rate_ml_per_h == 10.0
    else:
        error = refused(text)
        assert (error.code, error.reason, error.where) == ("AE", reason, "mllp OBX 4")


@pytest.mark.parametrize(
    ("unit", "reason"),
    [(ML, None), ("^^^mL^mL^UCUM", None), ("", "missing_unit"), (ML_PER_H, "wrong_unit")],
)
def test_a_volume_needs_its_unit_too(unit: str, reason: str | None) -> None:
    text = pump_server.pump_message(Row(CURRENT, "10", ML_PER_H), Row(VOLUME, "12.5", unit))
    if reason is None:
        assert reading(decode(text)).volume_infused_ml == 12.5
    else:
        assert refused(text).reason == reason


@pytest.mark.parametrize(
    ("value", "value_type", "reason"),
    [
        ("0", "NM", None),  # the edge: an empty counter
        ("-0.001", "NM", "negative"),
        ("ten", "NM", "not_a_number"),
        ("", "NM", "not_a_number"),
        ("10", "ST", "not_a_number"),
        ("nan", "NM", "huge_number"),
        ("inf", "NM", "huge_number"),
        ("1e309", "NM", "huge_number"),
        (str(0x007FFFFF), "NM", "sentinel"),  # 11073 NaN
        (str(0x00800000), "NM", "sentinel"),  # 11073 NRes
    ],
)
def test_a_bad_volume_refuses_the_whole_reading(value: str, value_type: str, reason: str | None) -> None:
    text = pump_server.pump_message(
        Row(CURRENT, "10", ML_PER_H), Row(VOLUME, value, ML, value_type=value_type)
    )
    if reason is None:
        assert reading(decode(text)).volume_infused_ml == 0.0
    else:
        error = refused(text)
        assert (error.code, error.reason) == ("AE", reason)


def test_a_reading_without_a_current_rate_is_refused_since_its_state_is_unknown() -> None:
    error = refused(pump_server.pump_message(*rows(programmed=10, volume=3)))
    assert (error.code, error.reason) == ("AE", "no_current_rate")


def test_the_same_quantity_twice_for_one_pump_is_refused() -> None:
    error = refused(pump_server.pump_message(Row(CURRENT, "10", ML_PER_H), Row(CURRENT, "20", ML_PER_H)))
    assert (error.reason, error.where) == ("duplicate_metric", "mllp OBX 5")


def test_a_message_of_an_unknown_pump_is_refused_naming_its_device() -> None:
    error = refused(pump_server.pump_message(*rows(current=10), device="FFFF000000000000"))
    assert (error.code, error.reason) == ("AE", "unknown_device")
    assert "FFFF000000000000" in error.detail


def test_a_pump_message_without_any_pump_rate_or_volume_is_refused() -> None:
    error = refused(pump_server.pump_message(Row(TO_BE_INFUSED, "100", ML)))
    assert (error.code, error.reason) == ("AE", "no_observation")


def test_other_pumps_and_other_quantities_of_a_pump_server_are_counted_not_filed() -> None:
    """A pump server serves the whole ward: the configured pump's reading is filed, the
    rows of another pump (MDS 2) and a quantity that is not a rate or volume are refused
    one by one."""
    ours = pump_server.pump_message(
        *rows(current=10),
        Row(TO_BE_INFUSED, "100", ML),
        Row("DRUG^drug name^99LOCAL", "blinatumomab", "", value_type="ST"),
    )
    theirs = pump_server.pump_message(*rows(current=50), device="FFFF000000000000", mds=2)
    obx = [line for line in theirs.split("\r") if line.startswith("OBX")]
    decoded = decode("\r".join([ours, *obx]))
    assert reading(decoded).rate_ml_per_h == 10.0
    assert [(r.reason, r.where) for r in decoded.rejected] == [
        ("unknown_code", "mllp OBX 5"),
        ("unknown_device", "mllp OBX 4"),
    ]  # the drug's name (a text row) is skipped, as the vitals skip text


@pytest.mark.parametrize(
    ("location", "patient", "reason"),
    [
        ("w1^^b1", "P-1", None),
        (None, None, None),  # no PID, no PV1: the device alone says whose
        ("w1^^b1", "", None),
        ("w1^^b2", "P-1", "bed_mismatch"),  # the pump moved, the config did not
        ("w2^^b1", "P-1", "bed_mismatch"),
        ("w1^^b1", "P-2", "patient_mismatch"),
    ],
)
def test_pv1_and_pid_when_sent_must_be_the_pumps_bed_and_patient(
    location: str | None, patient: str | None, reason: str | None
) -> None:
    text = pump_server.pump_message(*rows(current=10), location=location, patient=patient)
    if reason is None:
        assert reading(decode(text)).bed == "b1"
    else:
        assert (refused(text).code, refused(text).reason) == ("AE", reason)


def test_a_pump_servers_patient_is_checked_by_the_identifier_the_site_names() -> None:
    """As for the monitors: with ``[admissions] pseudonym_type`` set, a record number sent
    first is passed over for the pseudonym after it."""
    text = pump_server.pump_message(*rows(current=10), location="w1^^b1", patient="P-1")
    which = hl7in.PseudonymId("PN", None)

    def with_pid3(pid3: str) -> hl7in.Message:
        return hl7in.parse(text.replace("PID|||P-1^^^H^MR", f"PID|||{pid3}").encode(), "mllp")

    decoded = hl7pump.decode(
        with_pid3("MRN-77^^^H^MR~P-1^^^WARDD^PN"), where="m", now=NOW, pumps=PUMPS, pseudonym_id=which
    )
    assert reading(decoded).bed == "b1"
    for pid3, pseudonym_id, reason in (
        ("MRN-77^^^H^MR~P-2^^^WARDD^PN", which, "patient_mismatch"),
        ("MRN-77^^^H^MR~P-1^^^WARDD^PN", hl7in.FIRST_ID, "patient_mismatch"),
        ("MRN-77^^^H^MR", which, "patient_mismatch"),
    ):
        with pytest.raises(hl7in.Hl7Error) as caught:
            hl7pump.decode(with_pid3(pid3), where="m", now=NOW, pumps=PUMPS, pseudonym_id=pseudonym_id)
        assert (caught.value.code, caught.value.reason) == ("AE", reason)


def test_the_time_is_the_latest_of_the_rows_obx14_else_obr7() -> None:
    text = pump_server.pump_message(
        Row(CURRENT, "10", ML_PER_H, time="20260302130030+0100"),  # 12:00:30 UTC
        Row(VOLUME, "4", ML),  # OBR-7: 12:00:00
        observed="20260302120000+0000",
    )
    assert reading(decode(text)).time == AT + timedelta(seconds=30)


@pytest.mark.parametrize(
    ("time", "reason"),
    [
        ("20260302120600+0000", None),  # 300 s ahead of 12:01: the edge
        ("20260302120601+0000", "future_timestamp"),
        ("20260223120100+0000", None),  # 7 days old: the edge
        ("20260223120059+0000", "too_old"),
        ("20260302120000", "bad_timestamp"),  # no offset
    ],
)
def test_a_reading_at_an_unusable_time_is_refused(time: str, reason: str | None) -> None:
    text = pump_server.pump_message(Row(CURRENT, "10", ML_PER_H, time=time))
    if reason is None:
        assert reading(decode(text)).rate_ml_per_h == 10.0
    else:
        assert refused(text).reason == reason


def test_an_adt_message_is_not_a_pump_message() -> None:
    text = pump_server.pump_message(*rows(current=10), kind="ADT^A01^ADT_A01")
    assert not hl7pump.takes(hl7in.parse(text.encode(), "m"), PUMPS)
    error = refused(text)
    assert (error.code, error.reason) == ("AR", "unsupported_message")


def test_a_monitor_message_goes_to_the_vitals_and_a_pump_message_to_the_pumps() -> None:
    monitor = (
        "MSH|^~\\&|GW|ICU|WARDD|H|20260302120000+0000||ORU^R01^ORU_R01|M1|P|2.6\r"
        "PV1||I|w1^^b1\rOBR|1|||x|||20260302120000+0000\r"
        "OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|97|262688^MDC_DIM_PERCENT^MDC|||||R|||||||mon1"
    )
    assert not hl7pump.takes(hl7in.parse(monitor.encode(), "m"), PUMPS)
    assert hl7pump.takes(hl7in.parse(pump_server.pump_message(*rows(current=1)).encode(), "m"), PUMPS)
    # A configured pump's device alone is enough: the message is refused as a pump's.
    only_device = pump_server.pump_message(Row(TO_BE_INFUSED, "100", ML))
    assert hl7pump.takes(hl7in.parse(only_device.encode(), "m"), PUMPS)
    # A monitor that relays an unconfigured pump's rate beside its vital signs stays a
    # monitor (its SpO2 is filed, the rate refused as unknown_code by the vitals path);
    # without the vital sign, the message is a pump server's (and refused: unknown_device).
    relayed = (
        monitor
        + "\r"
        + pump_server.pump_message(*rows(current=10), device="FFFF000000000000").split("\r", 4)[4]
    )
    assert not hl7pump.takes(hl7in.parse(relayed.encode(), "m"), PUMPS)
    beds = hl7in.beds_lookup({("w1", "b1"): hl7in.Bed("w1", "b1", "P-1")})
    vitals = hl7in.decode(hl7in.parse(relayed.encode(), "m"), where="m", now=NOW, bed_of=beds)
    assert [type(e).__name__ for e in vitals.events] == ["VitalSample"]
    assert [r.reason for r in vitals.rejected] == ["unknown_code"]
    pump_only = pump_server.pump_message(*rows(current=10), device="FFFF000000000000")
    assert hl7pump.takes(hl7in.parse(pump_only.encode(), "m"), PUMPS)


def test_a_site_can_name_its_pump_servers_codes() -> None:
    config = _config(
        pump_codes={"current_rate": ["MDC_FLOW_FLUID_PUMP_CURRENT"], "volume_infused": ["157993", "157994"]}
    )
    pumps = hl7pump.Hl7Pumps.from_config(config)
    # By reference id only: the numeric code is not in the site's list, the id is.
    text = pump_server.pump_message(
        Row("^MDC_FLOW_FLUID_PUMP_CURRENT^MDC", "10", ML_PER_H), Row("157994^^MDC", "3", ML)
    )
    got = reading(decode(text, pumps))
    assert (got.rate_ml_per_h, got.volume_infused_ml) == (10.0, 3.0)
    # The default programmed-rate code stays: the site named only two lists.
    assert pumps.codes[PROGRAMMED.split("^")[0]] is hl7pump.Quantity.PROGRAMMED_RATE


_PIECES = hl7_pieces(
    "1.0.0.0",
    "1.1.1.1",
    ".",
    DEVICE,
    "EUI-64",
    "158014",
    "MDC_FLOW_FLUID_PUMP_CURRENT",
    "157993",
    "265266",
    "263762",
    "UCUM",
    "mL/h",
    "10",
    "8388607",
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_PIECES, max_size=60).map("".join))
def test_any_pump_message_is_decoded_or_refused_with_a_reason_and_always_answered(text: str) -> None:
    """Hostile or broken pump messages: readings or a refusal with its reason, never
    another exception, and an acknowledgement an independent library can read."""
    base = pump_server.pump_message(*rows(programmed=10, current=10, volume=5))
    for raw in (text, base + "\r" + text, base.replace("\rOBX|4", "\r" + text + "OBX|4")):
        try:
            message = hl7in.parse(raw.encode("utf-8", "surrogatepass"), "m")
        except hl7in.Hl7Error:
            continue  # not HL7 at all: the vitals' tests cover it
        refusal: hl7in.Hl7Error | None = None
        try:
            hl7pump.takes(message, PUMPS)
            decoded = hl7pump.decode(message, where="m", now=NOW, pumps=PUMPS)
        except hl7in.Hl7Error as exc:
            refusal = exc
        if refusal is not None:
            assert refusal.code in {"AE", "AR"}
            ack = hl7in.acknowledgement(message, refusal.code, refusal)
        else:
            assert all(isinstance(e, PumpReading) for e in decoded.events)
            ack = hl7in.acknowledgement(message)
        assert pump_server.answer(ack).code in {"AA", "AE", "AR"}


# --------------------------------------------------------------------------- the dose ledger

CONCENTRATION_UG_PER_ML = 0.0375  # a 24 h bag at 10 mL/h for 9 µg/day (domain.md section 1)


def _dose_conditions(readings: list[PumpReading]) -> list[tuple[str, bool, float | None]]:
    """The dose rule's candidates over ``readings`` of bed b1 (ssc-14d, day 1: 9 µg/day),
    with a tick a minute after each."""
    bag = {
        "bed": "b1",
        "bag_id": "B1",
        "concentration_ug_per_ml": CONCENTRATION_UG_PER_ML,
        "hung_at": START.isoformat(),
    }
    config = _config(more={"bags": [bag]})
    [rule] = dose_rules(config, config.bed("b1"))
    events: list[Event] = []
    for got in readings:
        events += [got, Tick(got.time + timedelta(seconds=30))]
    _, candidates = run(rule, events)
    return [(c.condition, c.present, c.value) for c in candidates]


def _hl7_readings(rate_ml_per_h: float) -> list[PumpReading]:
    """A pump server's readings every minute from 11:45 to 12:00 at ``rate_ml_per_h``."""
    out: list[PumpReading] = []
    for minute in range(16):
        at = AT - timedelta(minutes=15 - minute)
        volume = 100.0 + rate_ml_per_h * minute / 60.0
        text = pump_server.pump_message(
            *rows(
                programmed=rate_ml_per_h, current=rate_ml_per_h, volume=volume, time=pump_server.hl7_time(at)
            ),
            control_id=f"R{minute}",
        )
        out.append(reading(decode(text)))
    return out


@pytest.mark.parametrize(
    ("rate_ml_per_h", "expected"),
    [
        (10.0, []),
        (20.0, [(DOSE_RATE_HIGH, True, 18.0)]),
        (0.0, [(INFUSION_INTERRUPTED, True, 900.0)]),  # stopped 15 min: interruption_delay_s
    ],
    ids=["right-rate", "twice-the-rate", "stopped"],
)
def test_the_dose_ledger_judges_hl7_readings_as_a_serial_pumps(
    rate_ml_per_h: float, expected: list[tuple[str, bool, float]]
) -> None:
    """The right rate (10 mL/h: 9 µg/day) raises nothing; twice that raises DOSE_RATE_HIGH
    at 18 µg/day after rate_delay_s (5 min); a current rate of 0 is a stopped pump; and the
    readings a serial pump would give (state, rate and volume at the same times) give the
    very same candidates."""
    hl7_readings = _hl7_readings(rate_ml_per_h)
    state = PumpState.INFUSING if rate_ml_per_h > 0 else PumpState.STOPPED
    serial = [
        PumpReading("w1", "b1", "p1", r.time, state, rate_ml_per_h, r.volume_infused_ml) for r in hl7_readings
    ]
    candidates = _dose_conditions(hl7_readings)
    assert candidates == _dose_conditions(serial)
    assert [(c, present) for c, present, _ in candidates] == [(c, present) for c, present, _ in expected]
    assert [value for *_, value in candidates] == pytest.approx([value for *_, value in expected])


# --------------------------------------------------------------------------- config


def _issues(pumps: list[dict[str, Any]], **hl7: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _config(pumps, **hl7)
    return [str(issue) for issue in caught.value.issues]


HL7_PUMP: dict[str, Any] = {"id": "p1", "bed": "b1", "driver": "hl7", "device": DEVICE}


@pytest.mark.parametrize(
    ("pump", "says"),
    [
        ({"id": "p1", "bed": "b1", "driver": "hl7"}, "needs its device"),
        ({**HL7_PUMP, "url": "/dev/ttyUSB0"}, "url: serial-line settings"),
        ({**HL7_PUMP, "poll_interval_s": 5}, "poll_interval_s: serial-line settings"),
        ({**HL7_PUMP, "baudrate": 9600}, "baudrate: serial-line settings"),
        ({**HL7_PUMP, "device": "has space"}, "device"),
        ({"id": "p1", "bed": "b1"}, "set url"),
        ({"id": "p1", "bed": "b1", "url": "/dev/ttyUSB0", "device": DEVICE}, "device is an hl7 setting"),
    ],
)
def test_a_pump_is_validated_for_its_driver(pump: dict[str, Any], says: str) -> None:
    assert any(says in issue for issue in _issues([pump]))


def test_an_hl7_pump_with_its_comm_lost_time_is_valid() -> None:
    config = _config([{**HL7_PUMP, "comm_lost_after_s": 120}])
    assert (config.pumps[0].serial, config.pumps[0].comm_lost_after_s) == (False, 120)


def test_two_pumps_under_one_device_are_refused_with_where() -> None:
    pumps = [HL7_PUMP, {**HL7_PUMP, "id": "p2", "bed": "b2"}]
    assert _issues(pumps) == [f"pumps[1].device: '{DEVICE}' is already the device of pumps[0]"]


def test_an_hl7_pump_needs_the_listener() -> None:
    beds = _config().model_dump(mode="json")["beds"]
    with pytest.raises(ConfigError) as caught:
        parse({"beds": beds, "pumps": [HL7_PUMP]})
    assert [i.location for i in caught.value.issues] == ["pumps[0].driver"]


@pytest.mark.parametrize(
    ("codes", "says"),
    [
        ({"current_rate": []}, "at least one code"),
        ({"current_rate": ["15 8014"]}, "neither a numeric MDC code"),
        ({"current_rate": ["157784"]}, "157784 is both programmed_rate and current_rate"),
        ({"volume_infused": ["150456"]}, "vital-sign code"),
    ],
)
def test_the_pump_codes_are_validated(codes: dict[str, Any], says: str) -> None:
    assert any(says in issue for issue in _issues([HL7_PUMP], pump_codes=codes))


def test_serial_pumps_sharing_a_line_are_still_checked_beside_an_hl7_pump() -> None:
    serial = {"id": "s1", "bed": "b2", "url": "/dev/ttyUSB0"}
    issues = _issues([HL7_PUMP, serial, {**serial, "id": "s2", "bed": "b2"}])
    assert any(
        issue.startswith("pumps[2].url: pumps[1] already reads /dev/ttyUSB0: one NE-1000 per line")
        for issue in issues
    )


# --------------------------------------------------------------------------- link health


async def test_a_silent_pump_server_is_a_lost_link_and_a_reading_brings_it_back() -> None:
    """LOST once no reading came for comm_lost_after_s (not a moment before), counted from
    the start; CONNECTED at the next reading."""
    clock = ManualClock(NOW)
    config = _config([{**HL7_PUMP, "comm_lost_after_s": 30}])
    emitted: list[Event] = []

    async def emit(event: Event) -> None:
        emitted.append(event)

    silence = hl7pump.PumpSilence(hl7pump.Hl7Pumps.from_config(config), clock, emit)
    task = asyncio.create_task(silence.run(), name="test.silence")
    try:
        for _ in range(3):
            await asyncio.sleep(0)  # the watch starts and sleeps
        await clock.advance(29)
        assert emitted == []
        await clock.advance(1)
        assert [(e.source, e.health) for e in emitted if isinstance(e, SourceHealth)] == [
            ("pump[p1]", Health.LOST)
        ]
        await silence.heard(PumpReading("w1", "b1", "p1", clock.now(), PumpState.INFUSING, 10.0, None))
        assert silence.health("p1") is Health.CONNECTED
        assert isinstance(emitted[-1], SourceHealth)
        assert emitted[-1].health is Health.CONNECTED
        await clock.advance(29)
        assert len(emitted) == 2
        await clock.advance(1)
        assert [e.health for e in emitted if isinstance(e, SourceHealth)] == [
            Health.LOST,
            Health.CONNECTED,
            Health.LOST,
        ]
    finally:
        task.cancel()


# --------------------------------------------------------------------------- the daemon

LINE = re.compile(r"^(?P<measurement>[^,]+),(?P<tags>\S+) (?P<fields>.+) (?P<ns>\d+)$")


def _points(path: Path, measurement: str) -> list[tuple[dict[str, str], dict[str, str], int]]:
    """The line-protocol points of one measurement: tags, fields (as written), time in ns."""
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        match = LINE.match(line)
        if match is None or match["measurement"] != measurement:
            continue
        tags = dict(pair.split("=", 1) for pair in match["tags"].split(","))
        fields = dict(pair.split("=", 1) for pair in match["fields"].split(","))
        out.append((tags, fields, int(match["ns"])))
    return out


def _ward_file(path: Path, broker: Mosquitto, hl7_port: int) -> Path:
    start = datetime.now(UTC) - timedelta(hours=12)
    return write_ward_config(
        path,
        mqtt_url=broker.url,
        prefix="h7p",
        start=start,
        daemon="tick_interval_s = 0.2",
        influx='api = "none"\nflush_interval_s = 0.2',
        tables=f"""
[hl7]
port = {hl7_port}

[thresholds.vitals]
telemetry_stale_s = 86400.0

[thresholds.dose]
rate_delay_s = 1.0

[[pumps]]
id = "p1"
bed = "b1"
driver = "hl7"
device = "{DEVICE}"
comm_lost_after_s = 3.0

[[bags]]
bed = "b1"
bag_id = "B1"
concentration_ug_per_ml = {CONCENTRATION_UG_PER_ML}
hung_at = "{start.isoformat()}"
""",
    )


class _Server:
    """The pump server's side of the test: a reading every ``period_s``, volume counted up."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.volume_ml = 100.0
        self.sent: list[tuple[datetime, float, float]] = []  # time, rate, volume acknowledged AA
        self.last = datetime.now(UTC) - timedelta(seconds=1)

    async def reading(self, rate_ml_per_h: float) -> pump_server.Answer:
        """The next reading, a second after the last (the server's period: HL7 times here
        are to the second), sent when its time comes."""
        at = max(datetime.now(UTC).replace(microsecond=0), self.last + timedelta(seconds=1))
        await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))
        self.volume_ml += rate_ml_per_h * (at - self.last).total_seconds() / 3600.0
        self.last = at
        text = pump_server.pump_message(
            *rows(programmed=rate_ml_per_h, current=rate_ml_per_h, volume=round(self.volume_ml, 4)),
            control_id=f"R{len(self.sent)}",
            observed=pump_server.hl7_time(at),
            location="w1^^b1",
            patient="P-1",
        )
        [answer] = await pump_server.send(self.port, text)
        if answer.code == "AA":
            self.sent.append((at, rate_ml_per_h, round(self.volume_ml, 4)))
        return answer


def _alerts(alerts: list[dict[str, Any]], condition: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a.get("condition") == condition]


@pytest.mark.integration
async def test_a_pump_server_feeds_the_dose_ledger_of_a_running_daemon(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A pump server (hl7apy) sends PCD-01 readings over MLLP to ``wardd run``: each is
    stored as an ``infusion`` point with its values and time and feeds the dose ledger
    (``dose`` points: 9 µg/day at 10 mL/h); malformed ones get AE or AR with their reason;
    10 mL/h for over rate_delay_s raises nothing, 20 mL/h raises DOSE_RATE_HIGH; the server
    falling silent raises PUMP_COMM_LOST, its next reading resolves it; a reading
    acknowledged AA right before ``kill -9`` is stored by the next run."""
    port = free_port()
    daemon = WarddProcess(_ward_file(tmp_path / "ward.toml", mosquitto, port), tmp_path / "wardd.log")
    spool = tmp_path / "state" / "spool" / "points.lp"
    server = _Server(port)
    async with watch(mosquitto.url, "h7p/w1/bed/b1/alerts") as alerts:
        daemon.start()
        try:
            daemon.wait_connected()
            await until(lambda: "HL7 v2 (MLLP) listener" in daemon.output(), 10, "the MLLP listener")
            assert (await server.reading(10.0)).code == "AA"

            # Malformed: each refused whole with its reason, nothing filed.
            now = pump_server.hl7_time(datetime.now(UTC))
            bad = {
                "missing_unit": pump_server.pump_message(Row(CURRENT, "10", ""), observed=now),
                "unknown_device": pump_server.pump_message(
                    *rows(current=10), device="FFFF000000000000", observed=now
                ),
                "negative": pump_server.pump_message(*rows(current=10, volume=-1), observed=now),
                "not_a_number": pump_server.pump_message(Row(CURRENT, "fast", ML_PER_H), observed=now),
                "no_current_rate": pump_server.pump_message(*rows(programmed=10), observed=now),
                "patient_mismatch": pump_server.pump_message(*rows(current=10), patient="P-9", observed=now),
                "unsupported_message": pump_server.pump_message(*rows(current=10), kind="ADT^A04^ADT_A01"),
            }
            answers = await pump_server.send(port, *bad.values())
            assert [(a.code, a.reason) for a in answers] == [
                ("AR" if reason == "unsupported_message" else "AE", reason) for reason in bad
            ]

            # The right rate for 3 s (rate_delay_s is 1 s): no dose-rate alert.
            while server.sent[-1][0] - server.sent[0][0] < timedelta(seconds=3):
                assert (await server.reading(10.0)).code == "AA"
            await until(
                lambda: len(_points(spool, "infusion")) >= len(server.sent), 10, "the infusion points"
            )
            assert not [a for a in alerts if str(a.get("condition", "")).startswith("DOSE_RATE")]

            # Twice the rate: DOSE_RATE_HIGH, as for a serial pump.
            while not _alerts(alerts, DOSE_RATE_HIGH):
                assert (await server.reading(20.0)).code == "AA"
                assert len(server.sent) < 30, "no DOSE_RATE_HIGH"
            assert _alerts(alerts, DOSE_RATE_HIGH)[0]["value"] == pytest.approx(18.0)

            # Silence: PUMP_COMM_LOST after comm_lost_after_s; a reading resolves it.
            before = len(_alerts(alerts, "PUMP_COMM_LOST"))
            await until(
                lambda: any(a["state"] == "active" for a in _alerts(alerts, "PUMP_COMM_LOST")[before:]),
                15,
                "PUMP_COMM_LOST",
            )
            assert (await server.reading(20.0)).code == "AA"
            await until(
                lambda: _alerts(alerts, "PUMP_COMM_LOST")[-1]["state"] == "resolved", 15, "its resolution"
            )

            # Durable before AA: killed right after it, the next run files the reading.
            assert (await server.reading(20.0)).code == "AA"
            daemon.kill()
            daemon.start()
            daemon.wait_connected()
            await until(lambda: len(_points(spool, "infusion")) >= len(server.sent), 20, "the last point")
        finally:
            daemon.close()

    stored = {ns: fields for _, fields, ns in _points(spool, "infusion")}
    for at, rate, volume in server.sent:
        fields = stored[int(at.timestamp()) * 1_000_000_000]
        assert float(fields["rate_ml_per_h"]) == rate
        assert float(fields["volume_infused_ml"]) == pytest.approx(volume)
        assert fields["state"] == '"infusing"'
    assert len(stored) == len(server.sent)  # the refused messages left nothing
    delivered = [
        float(f["delivered_ug_per_day"]) for _, f, _ in _points(spool, "dose") if "delivered_ug_per_day" in f
    ]
    assert delivered[0] == pytest.approx(9.0)
    assert delivered[-1] == pytest.approx(18.0)
