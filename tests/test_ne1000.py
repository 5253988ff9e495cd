"""The NE-1000 codec: CRC, framing, replies, values, commands."""

from __future__ import annotations

import pytest

from daemon.devices.ne1000 import (
    Alarm,
    CommandError,
    RateUnit,
    ReplyDecoder,
    Status,
    Version,
    VolumeUnit,
    crc16_xmodem,
    encode_command,
    encode_reply,
    format_float,
    parse_command,
    parse_dispensed,
    parse_rate,
    parse_reply,
    parse_safe_command,
    parse_version,
    parse_volume,
    rate_to_ml_per_h,
)
from daemon.errors import FrameError


def test_crc_matches_the_manual_example() -> None:
    # The manual's way back to basic mode: 02 08 'SAF0' 55 43 03.
    assert crc16_xmodem(b"SAF0") == 0x5543
    assert encode_command("SAF0", None, safe=True) == bytes.fromhex("02 08 53 41 46 30 55 43 03")


def test_crc_check_value() -> None:
    assert crc16_xmodem(b"123456789") == 0x31C3  # CRC-16/XMODEM catalogue check value


def test_basic_command_encoding() -> None:
    assert encode_command("RAT", 3, safe=False) == b"3RAT\r"
    assert encode_command("", 12, safe=False) == b"12\r"
    assert encode_command("DIS", None, safe=False) == b"DIS\r"


@pytest.mark.parametrize("address", [-1, 100])
def test_bad_address_is_refused(address: int) -> None:
    with pytest.raises(ValueError, match="address"):
        encode_command("RAT", address, safe=False)


def test_control_characters_in_commands_are_refused() -> None:
    with pytest.raises(ValueError, match="printable"):
        encode_command("RAT\r5", 0, safe=False)


@pytest.mark.parametrize("safe", [False, True])
def test_reply_round_trip(safe: bool) -> None:
    frame = encode_reply(7, Status.INFUSING, "10.00MH", safe=safe)
    reply = parse_reply(frame, address=7)
    assert (reply.address, reply.status, reply.data, reply.safe) == (7, Status.INFUSING, "10.00MH", safe)


def test_alarm_reply() -> None:
    reply = parse_reply(b"\x0200A?S\x03")
    assert reply.status is Status.ALARM
    assert reply.alarm is Alarm.STALL


@pytest.mark.parametrize("error", list(CommandError))
def test_error_replies(error: CommandError) -> None:
    reply = parse_reply(encode_reply(0, Status.STOPPED, error.value, safe=False))
    assert reply.error is error
    assert reply.data == ""


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"00S\x03", "garbage"),
        (b"\x0200S", "truncated"),
        (b"\x020S\x03", "truncated"),
        (b"\x02AAS\x03", "bad_length"),
        (b"\x0200Z\x03", "unknown_status"),
        (b"\x0200A?Q\x03", "unknown_alarm"),
        (b"\x0200A\x03", "unknown_alarm"),
        (b"\x0200S?XYZ\x03", "unknown_error"),
        (b"\x0200S\xff\x03", "garbage"),
        (b"\x020xS\x03", "garbage"),
        (b"\x0201S\x03", "wrong_address"),
        (b"\x02" + b"0" * 70 + b"\x03", "bad_length"),
    ],
)
def test_bad_frames_have_stable_reasons(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_reply(frame, address=0)
    assert info.value.reason == reason


def test_safe_frame_with_bad_crc() -> None:
    frame = bytearray(encode_reply(0, Status.STOPPED, "", safe=True))
    frame[-2] ^= 0x01
    with pytest.raises(FrameError) as info:
        parse_reply(bytes(frame))
    assert info.value.reason == "bad_crc"


def test_safe_frame_with_wrong_length() -> None:
    frame = bytearray(encode_reply(0, Status.STOPPED, "10.00MH", safe=True))
    frame[1] -= 1
    with pytest.raises(FrameError) as info:
        parse_reply(bytes(frame))
    assert info.value.reason == "bad_length"


@pytest.mark.parametrize(
    ("data", "ml_per_h"),
    [("10.00MH", 10.0), ("600.0UH", 0.6), ("0.030MM", 1.8), ("30.00UM", 1.8)],
)
def test_rates_in_every_unit(data: str, ml_per_h: float) -> None:
    assert parse_rate(data).ml_per_h == pytest.approx(ml_per_h)


def test_rate_conversion_factors() -> None:
    assert rate_to_ml_per_h(1, RateUnit.ML_PER_MIN) == 60
    assert rate_to_ml_per_h(1000, RateUnit.UL_PER_H) == 1


def test_dispensed_and_volume() -> None:
    dispensed = parse_dispensed("I240.0W0.000ML")
    assert dispensed.infused_ml == 240.0
    assert parse_dispensed("I100.8W2.000UL").infused_ml == pytest.approx(0.1008)
    assert parse_dispensed("I100.8W2.000UL").withdrawn_ml == pytest.approx(0.002)
    assert parse_volume("270.0ML") == (270.0, VolumeUnit.ML)


@pytest.mark.parametrize("data", ["", "10.00", "10.00XX", "MH", "1.2.3MH", "-1MH"])
def test_bad_rates(data: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_rate(data)
    assert info.value.reason == "bad_data"


def test_bad_dispensed() -> None:
    with pytest.raises(FrameError):
        parse_dispensed("I1.0ML")
    with pytest.raises(FrameError):
        parse_volume("1.0")


def test_version() -> None:
    assert parse_version("NE1000V3.928") == Version(1000, 3, "928")
    assert parse_version("NE1000X2V3.928").upgrade == 2
    assert str(parse_version("NE1000X2V3.928")) == "NE1000X2V3.928"
    with pytest.raises(FrameError):
        parse_version("NE-1000 v3")


@pytest.mark.parametrize(
    ("value", "text"),
    [(10, "10.00"), (0.6, "0.600"), (1.8, "1.800"), (240, "240.0"), (1234, "1234"), (9.9996, "10.00")],
)
def test_float_format(value: float, text: str) -> None:
    assert format_float(value) == text


@pytest.mark.parametrize("value", [-1.0, 10_000.0, float("nan")])
def test_float_format_out_of_range(value: float) -> None:
    with pytest.raises(ValueError, match="4-digit"):
        format_float(value)


def test_decoder_resynchronises_after_garbage_and_partial_frames() -> None:
    decoder = ReplyDecoder(address=0)
    safe = encode_reply(0, Status.INFUSING, "I1.000W0.000ML", safe=True)
    items = decoder.feed(b"noise\x0200I1" + b"\x0200A?S\x03" + safe[:4])
    assert [i.error.reason if i.error else "reply" for i in items] == ["garbage", "truncated", "reply"]
    assert decoder.pending == 4
    (last,) = decoder.feed(safe[4:])
    assert last.reply is not None
    assert last.reply.data == "I1.000W0.000ML"
    assert decoder.feed(b"\x0200S") == []
    (flushed,) = decoder.flush()
    assert flushed.error is not None
    assert flushed.error.reason == "truncated"
    assert decoder.flush() == []


def test_decoder_reports_other_addresses() -> None:
    (item,) = ReplyDecoder(address=4).feed(encode_reply(5, Status.STOPPED, "", safe=False))
    assert item.error is not None
    assert item.error.reason == "wrong_address"


def test_decoder_drops_implausible_lengths() -> None:
    items = ReplyDecoder().feed(b"\x02\x01\x02\x7f")
    assert [i.error.reason for i in items if i.error] == ["bad_length", "garbage", "bad_length", "garbage"]
    assert b"".join(i.raw for i in items) == b"\x02\x01\x02\x7f"


def test_command_parsing_strips_and_uppercases() -> None:
    command = parse_command(b"0 rat 100 mh")
    assert (command.address, command.text, command.system) == (0, "RAT100MH", False)
    assert parse_command(b"rat 250 *").system
    assert parse_command(b"").text == ""


def test_safe_command_parsing() -> None:
    assert parse_safe_command(encode_command("DIS", 3, safe=True)).text == "DIS"
    packet = bytearray(encode_command("DIS", 3, safe=True))
    packet[-3] ^= 0x10
    with pytest.raises(FrameError) as info:
        parse_safe_command(bytes(packet))
    assert info.value.reason == "bad_crc"
