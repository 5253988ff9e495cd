"""The Alaris codec: frames, checksums (against infupy's own), replies, units, the read-only
guard, the stream decoder and the infusing-or-stopped judgement. Pure: no port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from infupy.backends.alaris import genCheckSum, genFrame, parseReply
from pydantic import ValidationError

from daemon.config import PumpConfig, load
from daemon.devices.alaris import (
    ESC,
    Command,
    ForbiddenCommandError,
    Frame,
    FrameDecoder,
    VolumeInfused,
    checksum,
    crc16_ccitt_false,
    encode_command,
    encode_frame,
    parse_frame,
    parse_rate,
    parse_remote,
    parse_serial_number,
    parse_volume_infused,
    security_code,
)
from daemon.devices.pumplink import InfusionTracker
from daemon.errors import FrameError
from daemon.events import PumpState


def test_crc_is_ccitt_false() -> None:
    # The catalogue check value of CRC-16/CCITT-FALSE over "123456789".
    assert crc16_ccitt_false(b"123456789") == 0x29B1
    assert checksum(b"INST_SERIALNO") == b"457D"


@pytest.mark.parametrize(
    "body",
    [b"INST_SERIALNO", b"INF_RATE", b"INF_VI", b"REMOTE_CTRL^ENABLED^3CC1", b"INF_VI^12.345^ml", b"x"],
)
def test_checksums_and_frames_agree_with_infupy(body: bytes) -> None:
    """infupy 2022.1.11's own functions (crcmod's 'crc-ccitt-false') give the same bytes."""
    assert checksum(body) == genCheckSum(body)
    fields = body.decode().split("^")
    assert encode_frame(fields) == genFrame(body)
    # infupy's reply parser: the fields after the command, and whether the checksum holds.
    values, ok = parseReply(encode_frame(fields)[1:-1])
    assert ok
    assert values == [f.encode() for f in fields[1:]]


def test_security_code_is_the_checksum_of_the_serial_number() -> None:
    # infupy: AlarisSyringe.securitycode = genCheckSum(serial number reply).
    assert security_code("8002-51740") == genCheckSum(b"8002-51740").decode() == "3CC1"


def test_parse_frame_round_trip_and_fields() -> None:
    frame = parse_frame(b"!INF_RATE^10.00^ml/h|" + checksum(b"INF_RATE^10.00^ml/h") + b"\r")
    assert frame == Frame(("INF_RATE", "10.00", "ml/h"))
    assert frame.command == "INF_RATE"
    assert frame.values == ("10.00", "ml/h")
    # Lower-case hex digits are accepted: the digits' value is what is checked.
    lower = b"!INF_VI|" + checksum(b"INF_VI").lower() + b"\r"
    assert parse_frame(lower).command == "INF_VI"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"INF_VI|ABCD\r", "garbage"),
        (b"!INF_VI|ABCD", "truncated"),
        (b"!INF_VI\r", "truncated"),
        (b"!INF_VI|ABC\r", "bad_length"),
        (b"!INF_VI|0000\r", "bad_crc"),
        (b"!INF\x1b_VI|0000\r", "aborted"),
        (b"!" + b"A" * 300 + b"|0000\r", "bad_length"),
        (b"!|" + checksum(b"") + b"\r", "garbage"),
        (b"!^x|" + checksum(b"^x") + b"\r", "bad_data"),
        (b"!A\x01|" + checksum(b"A\x01") + b"\r", "garbage"),
    ],
)
def test_parse_frame_refuses(raw: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(raw)
    assert info.value.reason == reason


def _frame(*fields: str) -> Frame:
    return parse_frame(encode_frame(fields))


def test_rate_and_volume_take_their_units_from_the_reply() -> None:
    rate = parse_rate(_frame("INF_RATE", "12.50", "ml/h"))
    assert (rate.value, rate.unit, rate.ml_per_h) == (12.5, "ml/h", 12.5)
    volume = parse_volume_infused(_frame("INF_VI", "3.125", "ml"))
    assert (volume.ml, volume.decimals) == (3.125, 3)
    assert volume.resolution_ml == pytest.approx(0.001)
    assert parse_volume_infused(_frame("INF_VI", "7", "ml")).resolution_ml == 1.0


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (("INF_RATE", "12.5", "ml/min"), "unknown_unit"),
        (("INF_RATE", "12.5", "ML/H"), "unknown_unit"),
        (("INF_RATE", "12.5"), "bad_data"),
        (("INF_RATE", "-1", "ml/h"), "bad_data"),
        (("INF_RATE", "1e3", "ml/h"), "bad_data"),
        (("INF_RATE", "nan", "ml/h"), "bad_data"),
        (("INF_RATE", "10000", "ml/h"), "bad_data"),
        (("INF_VI", "3.125", "ml"), "unexpected_reply"),
    ],
)
def test_rate_refusals(fields: tuple[str, ...], reason: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_rate(_frame(*fields))
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (("INF_VI", "3.125", "l"), "unknown_unit"),
        (("INF_VI", "3.125", "ul"), "unknown_unit"),
        (("INF_VI", "", "ml"), "bad_data"),
        (("INF_VI", "100000", "ml"), "bad_data"),
        (("INF_RATE", "3.125", "ml"), "unexpected_reply"),
    ],
)
def test_volume_refusals(fields: tuple[str, ...], reason: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_volume_infused(_frame(*fields))
    assert info.value.reason == reason


def test_serial_number_and_remote_replies() -> None:
    assert parse_serial_number(_frame("INST_SERIALNO", "8002-51740")) == "8002-51740"
    # Several values are joined by spaces, as infupy joins them before taking the checksum.
    assert parse_serial_number(_frame("INST_SERIALNO", "A", "B")) == "A B"
    with pytest.raises(FrameError, match="empty serial"):
        parse_serial_number(_frame("INST_SERIALNO", ""))
    assert parse_remote(_frame("REMOTE_CTRL", "ENABLED"), Command.REMOTE_CONTROL) is True
    assert parse_remote(_frame("REMOTE_CFG", "DISABLED"), Command.REMOTE_CONFIG) is False
    with pytest.raises(FrameError) as info:
        parse_remote(_frame("REMOTE_CFG", "ENABLED"), Command.REMOTE_CONTROL)
    assert info.value.reason == "unexpected_reply"
    with pytest.raises(FrameError) as info:
        parse_remote(_frame("REMOTE_CTRL", "MAYBE"), Command.REMOTE_CONTROL)
    assert info.value.reason == "bad_data"


def test_host_commands_are_the_ones_infupy_sends() -> None:
    code = security_code("8002-51740")
    assert encode_command(Command.SERIAL_NUMBER) == genFrame(b"INST_SERIALNO")
    assert encode_command(Command.RATE) == genFrame(b"INF_RATE")
    assert encode_command(Command.VOLUME_INFUSED) == genFrame(b"INF_VI")
    assert encode_command(Command.REMOTE_CONTROL, "ENABLED", code) == genFrame(b"REMOTE_CTRL^ENABLED^3CC1")
    assert encode_command(Command.REMOTE_CONFIG, "DISABLED") == genFrame(b"REMOTE_CFG^DISABLED")


@pytest.mark.parametrize(
    ("command", "arguments"),
    [
        (Command.START, ()),
        (Command.STOP, ()),
        (Command.RATE, ("5.0", "ml/h")),
        (Command.VOLUME_INFUSED, ("0",)),
        (Command.SERIAL_NUMBER, ("X",)),
    ],
)
def test_the_codec_refuses_commands_that_change_the_infusion(
    command: Command, arguments: tuple[str, ...]
) -> None:
    with pytest.raises(ForbiddenCommandError):
        encode_command(command, *arguments)


def test_remote_commands_take_only_enable_with_a_code_or_disable() -> None:
    for arguments in [(), ("ENABLED",), ("ENABLED", "3cc1"), ("ENABLED", "3CC1", "x"), ("ON",)]:
        with pytest.raises(ValueError, match="ENABLED"):
            encode_command(Command.REMOTE_CONTROL, *arguments)


def test_frame_fields_cannot_smuggle_framing() -> None:
    for bad in ["a|b", "a!b", "a\rb", "a\x1bb", "é", ""]:
        with pytest.raises(ValueError):  # noqa: PT011 - the message names the field
            encode_frame(["INF_RATE", bad] if bad else [bad])


# ---------------------------------------------------------------- stream decoder


def _reply(*fields: str) -> bytes:
    return encode_frame(fields)


def test_decoder_splits_frames_and_survives_garbage_esc_and_bad_checksums() -> None:
    decoder = FrameDecoder()
    good = _reply("INF_VI", "1.000", "ml")
    bad_crc = good[:-2] + (b"0" if good[-2:-1] != b"0" else b"1") + b"\r"
    stream = b"\x00noise" + good + bad_crc + good[:5] + bytes([ESC]) + good + b"\r\r" + good
    items = decoder.feed(stream)
    kinds = [(i.frame.command if i.frame else None, i.error.reason if i.error else None) for i in items]
    assert kinds == [
        (None, "garbage"),
        ("INF_VI", None),
        (None, "bad_crc"),
        (None, "aborted"),
        ("INF_VI", None),
        (None, "garbage"),
        ("INF_VI", None),
    ]
    assert b"".join(i.raw for i in items) == stream, "every byte lands in exactly one item"
    assert decoder.pending == 0


def test_decoder_joins_split_reads_and_flushes_a_cut_frame() -> None:
    decoder = FrameDecoder()
    good = _reply("INF_RATE", "10.00", "ml/h")
    out = []
    for byte in good:
        out += decoder.feed(bytes([byte]))
    assert [i.frame for i in out] == [Frame(("INF_RATE", "10.00", "ml/h"))]
    assert decoder.feed(good[:7]) == []
    assert decoder.pending == 7
    # A new "!" before the CR: the first frame was cut short.
    items = decoder.feed(good)
    assert [i.error.reason if i.error else "ok" for i in items] == ["truncated", "ok"]
    assert decoder.feed(good[:4]) == []
    flushed = decoder.flush()
    assert [i.error.reason for i in flushed if i.error] == ["truncated"]
    assert decoder.flush() == []


def test_decoder_bounds_its_buffer() -> None:
    decoder = FrameDecoder()
    items = decoder.feed(b"!" + b"A" * 400)
    assert items
    assert items[0].error is not None
    assert items[0].error.reason == "bad_length"
    assert decoder.pending < 256


# ---------------------------------------------------------------- infusing or stopped


def _observe(tracker: InfusionTracker, t_s: float, ml: float, rate_ml_per_h: float) -> PumpState | None:
    volume = VolumeInfused(round(ml, 3), "ml", 3)
    return tracker.observe(t_s, volume.ml, volume.resolution_ml, rate_ml_per_h)


def test_tracker_needs_a_second_sample_then_follows_the_volume() -> None:
    tracker = InfusionTracker()
    assert _observe(tracker, 0.0, 1.0, 10.0) is None
    assert _observe(tracker, 2.0, 1.0056, 10.0) is PumpState.INFUSING
    # Unchanged, but 10 mL/h for 0.5 s is 1.4 µL, under two 1 µL steps: still infusing.
    assert _observe(tracker, 2.5, 1.0056, 10.0) is PumpState.INFUSING
    # Unchanged for 1 s at 10 mL/h (2.8 µL): stopped.
    assert _observe(tracker, 3.0, 1.0056, 10.0) is PumpState.STOPPED
    assert _observe(tracker, 4.0, 1.0084, 10.0) is PumpState.INFUSING


def test_tracker_at_low_rates_waits_for_enough_volume() -> None:
    tracker = InfusionTracker()
    assert _observe(tracker, 0.0, 5.0, 0.1) is None
    # 0.1 mL/h moves two 1 µL steps in 72 s: no judgement before.
    assert _observe(tracker, 60.0, 5.0, 0.1) is None
    assert _observe(tracker, 80.0, 5.0, 0.1) is PumpState.STOPPED


def test_tracker_rate_zero_is_stopped_and_a_cleared_counter_is_a_new_baseline() -> None:
    tracker = InfusionTracker()
    assert _observe(tracker, 0.0, 2.0, 0.0) is PumpState.STOPPED
    assert _observe(tracker, 1.0, 2.1, 10.0) is PumpState.INFUSING
    # A new bag: the counter starts again from 0; the last answer stands meanwhile.
    assert _observe(tracker, 2.0, 0.0, 10.0) is PumpState.INFUSING
    assert _observe(tracker, 3.0, 0.003, 10.0) is PumpState.INFUSING


# ---------------------------------------------------------------- configuration


def _pump(**values: Any) -> PumpConfig:
    return PumpConfig.model_validate({"id": "p1", "bed": "b1", "url": "/dev/null", **values})


def test_config_selects_the_alaris_with_its_baud_rate() -> None:
    alaris = _pump(driver="alaris-asena")
    assert (alaris.baudrate, alaris.keepalive_interval_s) == (38400, 1.0)
    assert _pump().driver == "ne1000"
    assert _pump().baudrate == 19200


@pytest.mark.parametrize(
    "values",
    [
        {"driver": "alaris-asena", "address": 3},
        {"driver": "alaris-asena", "safe_mode_timeout_s": 5},
        {"keepalive_interval_s": 2.0},
        {"baudrate": 38400},
        {"driver": "baxter"},
    ],
)
def test_config_refuses_settings_of_the_other_protocol(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _pump(**values)


EXAMPLE = Path(__file__).parent.parent / "config" / "ward.example.toml"


def test_the_example_config_alaris_block_loads_once_uncommented(tmp_path: Path) -> None:
    """The commented Alaris [[pumps]] block of the example is a working configuration."""
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("# [[pumps]]")
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line.removeprefix("# "))
    assert 'driver = "alaris-asena"' in block
    path = tmp_path / "ward.toml"
    path.write_text(EXAMPLE.read_text() + "\n" + "\n".join(block) + "\n")
    alaris = [p for p in load(path).pumps if p.driver == "alaris-asena"]
    assert len(alaris) == 1
    assert (alaris[0].bed, alaris[0].baudrate, alaris[0].keepalive_interval_s) == ("14", 38400, 1.0)
