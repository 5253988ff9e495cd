"""Monitors over HL7 v2 (IHE PCD-01 ORU^R01 over MLLP): decoded like the MQTT vitals, refused
with AE or AR and the reason, acknowledged AA only once durable. The acknowledgements are
read back with hl7apy, an HL7 library independent of the one the daemon builds them with."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hl7.mllp
import pytest
from hl7apy.parser import parse_message
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.config import Hl7Config, ServerTlsConfig, parse
from daemon.errors import ConfigError, InputError
from daemon.events import Health, Metric, SourceHealth, VitalSample
from daemon.hl7 import hl7in
from daemon.links.mllp import MllpListener
from daemon.metrics import Counters
from simulators import tls_certs
from tests.codec_fuzz import hl7_pieces
from tests.helpers import QUICK_FEVER, write_ward_config
from tests.mqtt_watch import until, watch
from tests.servers import Mosquitto, free_port
from tests.ward_load import WarddProcess

NOW = datetime(2026, 3, 2, 12, 1, tzinfo=UTC)
BEDS = hl7in.beds_lookup({("w1", "b1"): hl7in.Bed("w1", "b1", "P-1")})
PROFILE = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"


def hl7_time(when: datetime) -> str:
    return when.strftime("%Y%m%d%H%M%S") + "+0000"


def oru(
    *obx: str,
    control_id: str = "MSG1",
    location: str = "w1^^b1",
    patient: str = "P-1",
    obr_time: str = "20260302120000+0000",
    kind: str = "ORU^R01^ORU_R01",
) -> bytes:
    """A PCD-01 message (domain.md section 5): MSH, PID, PV1, OBR, an MDS structure row, ``obx``."""
    segments = [
        f"MSH|^~\\&|GW^0012345678ABCDEF^EUI-64|ICU|WARDD|H|20260302120000+0000||{kind}|{control_id}|P|2.6|||AL|NE||||||{PROFILE}",
        f"PID|||{patient}^^^H^MR",
        f"PV1||I|{location}",
        f"OBR|1|||182777000^monitoring of patient^SNOMED-CT|||{obr_time}",
        "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X",
        *obx,
    ]
    return "\r".join(segments).encode()


def nm(
    n: int, code: str, value: str, unit: str, *, time: str = "20260302120000+0000", device: str = "mon1"
) -> str:
    """One numeric OBX: OBX-2 NM, -3 code, -4 path, -5 value, -6 unit, -11 R, -14 time, -17 method, -18 device."""
    return (
        f"OBX|{n}|NM|{code}|1.1.1.{n}|{value}|{unit}|||||R|||{time}|||AMEAS|{device}^^0012345678ABCDEF^EUI-64"
    )


SPO2 = "150456^MDC_PULS_OXIM_SAT_O2^MDC"
TEMP = "150364^MDC_TEMP_BODY^MDC"
SBP = "150021^MDC_PRESS_BLD_NONINV_SYS^MDC"
PERCENT = "262688^MDC_DIM_PERCENT^MDC"
DEGC = "268192^MDC_DIM_DEGC^MDC"
MMHG = "266016^MDC_DIM_MMHG^MDC"


def decode(raw: bytes) -> hl7in.Decoded:
    return hl7in.decode(hl7in.parse(raw, "mllp"), where="mllp", now=NOW, bed_of=BEDS)


# --------------------------------------------------------------------------- pure


def test_a_pcd01_message_gives_the_vitals_of_its_bed_and_refuses_an_impossible_value() -> None:
    decoded = decode(oru(nm(2, SPO2, "97", PERCENT), nm(3, TEMP, "38.4", DEGC), nm(4, SBP, "999", MMHG)))
    assert decoded.control_id == "MSG1"
    assert decoded.events == (
        VitalSample(
            "w1",
            "b1",
            "mon1",
            datetime(2026, 3, 2, 12, 0, tzinfo=UTC),
            {Metric.SPO2_PCT: 97.0, Metric.TEMP_C: 38.4},
        ),
    )
    [refused] = decoded.rejected
    assert (refused.reason, refused.where) == ("implausible", "mllp OBX 4")


def test_times_come_from_obx14_else_obr7_with_their_offset_and_group_the_samples() -> None:
    decoded = decode(
        oru(
            nm(2, SPO2, "97", PERCENT, time="20260302130000+0100"),  # the same instant as OBR-7
            nm(3, TEMP, "37.0", DEGC, time=""),  # no OBX-14: OBR-7's time
            nm(4, SBP, "120", MMHG, time="20260302115900+0000"),
        )
    )
    assert [(e.time, sorted(e.values)) for e in decoded.events if isinstance(e, VitalSample)] == [
        (datetime(2026, 3, 2, 12, 0, tzinfo=UTC), [Metric.SPO2_PCT, Metric.TEMP_C]),
        (datetime(2026, 3, 2, 11, 59, tzinfo=UTC), [Metric.SBP_MMHG]),
    ]


@pytest.mark.parametrize(
    ("time", "reason"),
    [
        ("20260302120000", "bad_timestamp"),  # no offset: which clock?
        ("2026030212", "bad_timestamp"),
        ("garbage", "bad_timestamp"),
        ("20260302120601+0000", "future_timestamp"),  # 300 s and 1 s ahead of 12:01
        ("20260223120059+0000", "too_old"),  # 7 days and 1 s before 12:01
    ],
)
def test_an_observation_with_an_unusable_time_is_refused_with_its_reason(time: str, reason: str) -> None:
    decoded = decode(oru(nm(2, SPO2, "97", PERCENT, time=time)))
    assert decoded.events == ()
    assert [r.reason for r in decoded.rejected] == [reason]


@pytest.mark.parametrize(
    "time", ["20260302120600+0000", "20260223120100+0000"], ids=["300s-ahead", "7-days-old"]
)
def test_an_observation_at_the_edge_of_the_time_limits_is_kept(time: str) -> None:
    assert len(decode(oru(nm(2, SPO2, "97", PERCENT, time=time))).events) == 1


@pytest.mark.parametrize(
    ("unit", "kept"),
    [
        ("262688^MDC_DIM_PERCENT^MDC", True),
        ("262688^MDC_DIM_PERCENT^MDC^%^%^UCUM", True),
        ("^^^%^%^UCUM", True),  # a UCUM unit alone
        ("264864^MDC_DIM_BEAT_PER_MIN^MDC", False),  # a heart-rate unit on SpO2
        ("", False),
    ],
)
def test_the_unit_is_read_from_obx6_as_mdc_or_ucum(unit: str, kept: bool) -> None:
    decoded = decode(oru(nm(2, SPO2, "97", unit)))
    assert bool(decoded.events) is kept
    assert [r.reason for r in decoded.rejected] == ([] if kept else ["wrong_unit"])


def test_a_code_is_read_by_number_or_by_reference_id_and_an_unknown_one_is_refused() -> None:
    decoded = decode(
        oru(nm(2, "^MDC_PULS_OXIM_SAT_O2^MDC", "96", PERCENT), nm(3, "999999^MDC_NOTHING^MDC", "1", PERCENT))
    )
    assert [e.values for e in decoded.events if isinstance(e, VitalSample)] == [{Metric.SPO2_PCT: 96.0}]
    assert [r.reason for r in decoded.rejected] == ["unknown_code"]


def test_an_11073_sentinel_is_a_probe_off_signal_not_a_value() -> None:
    decoded = decode(oru(nm(2, SPO2, str(0x007FFFFF), PERCENT)))
    assert decoded.events == (
        SourceHealth(
            "w1", "b1", "monitor.spo2_pct", datetime(2026, 3, 2, 12, 0, tzinfo=UTC), Health.LOST, "probe-off"
        ),
    )
    assert [r.reason for r in decoded.rejected] == ["sentinel"]


@pytest.mark.parametrize(
    ("raw", "code", "reason"),
    [
        (b"\xff\xfe not text", "AR", "not_hl7"),
        (b"PID|||P-1", "AR", "not_hl7"),
        (oru(nm(2, SPO2, "97", PERCENT), kind="ADT^A01^ADT_A01"), "AR", "unsupported_message"),
        (oru(nm(2, SPO2, "97", PERCENT), location="w1^^b9"), "AE", "unknown_bed"),
        (oru(nm(2, SPO2, "97", PERCENT), location="w2^^b1"), "AE", "unknown_bed"),
        (oru(nm(2, SPO2, "97", PERCENT), patient="P-2"), "AE", "patient_mismatch"),
        (oru(), "AE", "no_observation"),
    ],
    ids=["not-text", "no-msh", "adt", "unknown-bed", "other-ward", "other-patient", "no-observation"],
)
def test_a_message_that_cannot_be_filed_is_refused_whole(raw: bytes, code: str, reason: str) -> None:
    with pytest.raises(hl7in.Hl7Error) as caught:
        decode(raw)
    assert (caught.value.code, caught.value.reason) == (code, reason)


def test_a_message_without_a_patient_identifier_is_filed_by_its_bed() -> None:
    assert len(decode(oru(nm(2, SPO2, "97", PERCENT), patient="")).events) == 1


# A gateway that sends the hospital's record number first and the pseudonym after it.
RECORD_FIRST = "MRN-77^^^H^MR~{}^^^WARDD^PN"
PSEUDONYM = hl7in.PseudonymId("PN", "WARDD")  # [admissions] pseudonym_type / _authority


@pytest.mark.parametrize(
    ("pid3", "which", "reason"),
    [
        (RECORD_FIRST.format("P-1"), PSEUDONYM, None),
        (RECORD_FIRST.format("P-2"), PSEUDONYM, "patient_mismatch"),
        # The same type from another authority is not the pseudonym: the next one is.
        ("P-2^^^OTHER^PN~P-1^^^WARDD^PN", PSEUDONYM, None),
        ("P-1^^^OTHER^PN~P-2^^^WARDD^PN", PSEUDONYM, "patient_mismatch"),
        # No identifier of that kind: the first one, sent without its type code, is checked.
        ("P-1", PSEUDONYM, None),
        ("MRN-77^^^H^MR", PSEUDONYM, "patient_mismatch"),
        # No identifier at all: the message names no patient, and is filed by its bed.
        ("^^^H^MR", PSEUDONYM, None),
        # The site named no kind: the first identifier, the record number here.
        (RECORD_FIRST.format("P-1"), hl7in.FIRST_ID, "patient_mismatch"),
    ],
)
def test_the_patient_checked_is_the_pid3_identifier_the_site_names(
    pid3: str, which: hl7in.PseudonymId, reason: str | None
) -> None:
    raw = oru(nm(2, SPO2, "97", PERCENT)).replace(b"PID|||P-1^^^H^MR", f"PID|||{pid3}".encode())
    message = hl7in.parse(raw, "mllp")
    if reason is None:
        decoded = hl7in.decode(message, where="mllp", now=NOW, bed_of=BEDS, pseudonym_id=which)
        assert [e.bed for e in decoded.events if isinstance(e, VitalSample)] == ["b1"]
        return
    with pytest.raises(hl7in.Hl7Error) as caught:
        hl7in.decode(message, where="mllp", now=NOW, bed_of=BEDS, pseudonym_id=which)
    assert (caught.value.code, caught.value.reason) == ("AE", reason)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("monitoring \\\\of patient", "bad_escape"),  # an empty sequence: not HL7
        ("\\\\", "bad_escape"),
        ("monitoring \\E\\\\F\\ of patient", None),  # \E\ then \F\: two sequences in a row
        ("monitoring \\E\\ of patient", None),
        ("monitoring of patient \\", None),  # not closed: kept as sent
    ],
)
def test_an_empty_escape_sequence_is_refused_before_any_field_is_read(text: str, reason: str | None) -> None:
    """python-hl7 logs an empty escape sequence and reads on with the value changed: the
    message is refused whole (AE) before that; two sequences in a row are not one empty one."""
    raw = oru(nm(2, SPO2, "97", PERCENT)).replace(b"monitoring of patient", text.encode())
    if reason is None:
        assert len(decode(raw).events) == 1
        return
    with pytest.raises(hl7in.Hl7Error) as caught:
        decode(raw)
    assert (caught.value.code, caught.value.reason) == ("AE", reason)
    # The answer names the message without reading a field of it.
    ack = parse_message(
        hl7in.acknowledgement(hl7in.parse(raw, "m"), "AE", caught.value).decode(), find_groups=False
    )
    assert (ack.msa.msa_1.value, ack.msa.msa_2.value) == ("AE", "MSG1")


def test_acknowledgements_read_back_by_an_independent_library() -> None:
    message = hl7in.parse(oru(nm(2, SPO2, "97", PERCENT), control_id="C-42"), "mllp")
    ack = parse_message(hl7in.acknowledgement(message).decode(), find_groups=False)
    assert (ack.msh.msh_9.value, ack.msa.msa_1.value, ack.msa.msa_2.value) == ("ACK^R01^ACK", "AA", "C-42")
    error = hl7in.Hl7Error("AE", "unknown_bed", "PV1-3 names ward 'w|1' bed '^', not configured", "mllp")
    refused = parse_message(hl7in.acknowledgement(message, "AE", error).decode(), find_groups=False)
    assert refused.msa.msa_1.value == "AE"
    assert refused.err.err_3.value == "207^unknown_bed^HL70357"
    assert refused.err.err_4.value == "E"
    # The sender's delimiters in the detail are escaped, so the segment still parses whole.
    assert refused.err.err_8.value == "unknown_bed: PV1-3 names ward 'w\\F\\1' bed '\\S\\', not configured"
    unreadable = parse_message(
        hl7in.acknowledgement(None, "AR", hl7in.Hl7Error("AR", "not_hl7", "x", "m")).decode(),
        find_groups=False,
    )
    assert unreadable.msa.msa_1.value == "AR"


# --------------------------------------------------------------------------- the daemon


def _config(path: Path, broker: Mosquitto, hl7_port: int) -> Path:
    return write_ward_config(
        path, mqtt_url=broker.url, prefix="h7", tables=f"[hl7]\nport = {hl7_port}\n{QUICK_FEVER}"
    )


async def _send(port: int, raw: bytes) -> str:
    """One message over MLLP with python-hl7's client streams; the acknowledgement's MSA-1."""
    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port)
    try:
        writer.writeblock(raw)
        await writer.drain()
        ack = await asyncio.wait_for(reader.readblock(), 10)
    finally:
        writer.close()
    parsed = parse_message(ack.decode(), find_groups=False)
    return str(parsed.msa.msa_1.value)


def _fever(k: int, at: datetime) -> bytes:
    return oru(nm(2, TEMP, "38.6", DEGC, time=hl7_time(at)), control_id=f"F{k}", obr_time=hl7_time(at))


@pytest.mark.integration
async def test_vitals_over_mllp_raise_the_fever_alert_and_survive_a_kill_after_their_aa(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A gateway sends two febrile samples 3 s apart (fever_delay_s 2 s, 2 samples): each gets
    AA; the daemon is killed at once after the second AA, and at restart the fever alert is
    raised from the logged message; an unknown bed gets AE, an ADT message AR."""
    port = free_port()
    daemon = WarddProcess(_config(tmp_path / "ward.toml", mosquitto, port), tmp_path / "wardd.log")
    now = datetime.now(UTC).replace(microsecond=0)
    listening: Callable[[], bool] = lambda: "HL7 v2 (MLLP) listener" in daemon.output()  # noqa: E731
    async with watch(mosquitto.url, "h7/w1/bed/b1/alerts") as alerts:
        daemon.start()
        try:
            daemon.wait_connected()
            await until(listening, 10, "the MLLP listener")
            assert await _send(port, oru(nm(2, TEMP, "37.0", DEGC), location="w1^^b9")) == "AE"
            assert await _send(port, oru(nm(2, TEMP, "37.0", DEGC), kind="ADT^A04^ADT_A01")) == "AR"
            assert await _send(port, _fever(1, now - timedelta(seconds=4))) == "AA"
            assert await _send(port, _fever(2, now - timedelta(seconds=1))) == "AA"
            daemon.kill()
            daemon.start()
            daemon.wait_connected()
            await until(lambda: any(a.get("condition") == "FEVER" for a in alerts), 20, "the FEVER alert")
        finally:
            daemon.close()
    fever = next(a for a in alerts if a.get("condition") == "FEVER")
    assert fever["value"] == 38.6
    assert json.dumps(fever)  # a plain JSON transition, as for MQTT vitals


_PIECES = hl7_pieces("w1", "b1", "P-1", "ORU", "R01", "150456", "MDC_DIM_PERCENT", "262688", "97")


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=60).map("".join), st.binary(max_size=40))
def test_any_input_is_decoded_or_refused_with_a_reason_and_always_answered(text: str, noise: bytes) -> None:
    """Hostile or broken messages: a decoded result or a refusal with its reason, never a crash,
    and an acknowledgement that an independent library can read, whatever came in."""
    base = oru(nm(2, SPO2, "97", PERCENT)).decode()
    for raw in (text.encode(), noise, (base + "\r" + text).encode(), text.replace("|", "|", 1).encode()):
        refused: hl7in.Hl7Error | None = None
        try:
            decoded = decode(raw)
        except hl7in.Hl7Error as exc:
            refused = exc
        if refused is not None:
            assert refused.code in {"AE", "AR"}
            readable = None if refused.reason == "not_hl7" else hl7in.parse(raw, "m")
            ack = hl7in.acknowledgement(readable, refused.code, refused)
        else:
            assert all(isinstance(r, InputError) for r in decoded.rejected)
            ack = hl7in.acknowledgement(hl7in.parse(raw, "m"))
        assert parse_message(ack.decode(), find_groups=False).msa.msa_1.value in {"AA", "AE", "AR"}


# --------------------------------------------------------------------------- TLS


async def _answer_aa(raw: bytes, where: str, reply: Callable[[bytes], None]) -> None:
    reply(hl7in.acknowledgement(hl7in.parse(raw, where)))


@pytest.mark.integration
async def test_over_tls_only_a_gateway_with_a_certificate_of_the_ca_is_answered(tmp_path: Path) -> None:
    """[hl7.tls] with client_ca_file: a gateway with a client certificate signed by that CA
    gets its AA; one without a certificate, or speaking plain TCP, gets nothing."""
    ca = tls_certs.authority(tmp_path / "ca")
    server = tls_certs.server_cert(tmp_path / "server", ca)
    client = tls_certs.server_cert(
        tmp_path / "client", ca, names=("gateway",), name="gateway", usage="clientAuth"
    )
    settings = Hl7Config(
        port=0, tls=ServerTlsConfig(cert_file=server.cert, key_file=server.key, client_ca_file=ca.cert)
    )
    listener = MllpListener(settings, _answer_aa, Counters())
    task = asyncio.create_task(listener.run(), name="test.mllp")
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        assert listener.port is not None
        trusted = ssl.create_default_context(cafile=str(ca.cert))
        trusted.load_cert_chain(str(client.cert), str(client.key))
        assert await _exchange(listener.port, trusted) == "AA"
        anonymous = ssl.create_default_context(cafile=str(ca.cert))
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await _exchange(listener.port, anonymous)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError, TimeoutError)):
            await _exchange(listener.port, None, timeout_s=3)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _exchange(port: int, context: ssl.SSLContext | None, *, timeout_s: float = 10) -> str:
    reader, writer = await hl7.mllp.open_hl7_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost" if context else None
    )
    try:
        writer.writeblock(oru(nm(2, SPO2, "97", PERCENT)))
        await writer.drain()
        ack = await asyncio.wait_for(reader.readblock(), timeout_s)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    return str(parse_message(ack.decode(), find_groups=False).msa.msa_1.value)


def test_hl7_in_is_refused_with_several_workers() -> None:
    # One listener for every bed, where each worker takes only its own beds.
    with pytest.raises(ConfigError) as caught:
        parse({"daemon": {"workers": 2}, "hl7": {"port": 2575}})
    assert {issue.location: issue.reason for issue in caught.value.issues} == {
        "hl7.port": "HL7 v2 in needs daemon.workers = 1 (for now)"
    }
    assert parse({"daemon": {"workers": 1}, "hl7": {"port": 2575}}).hl7.port == 2575
    assert parse({"daemon": {"workers": 2}}).hl7.port is None


def test_an_unusable_certificate_stops_the_start_naming_its_setting(tmp_path: Path) -> None:
    settings = Hl7Config(port=0, tls=ServerTlsConfig(cert_file=tmp_path / "missing.pem"))
    with pytest.raises(ConfigError) as caught:
        MllpListener(settings, _answer_aa, Counters())
    assert "hl7.tls.cert_file" in str(caught.value)
