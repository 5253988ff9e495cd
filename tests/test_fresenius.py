"""The Fresenius Base A codec: frames and checksums (against infupy's own functions),
replies, variables, error codes, the read-only guard, the stream decoder and the
link-level answers. Pure: no port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from infupy.backends import fresenius as infupy
from pydantic import ValidationError

from daemon.config import PumpConfig, load, parse
from daemon.devices.fresenius import (
    ACK,
    COMMAND_ERRORS,
    DC4,
    ENQ,
    LINK_ERRORS,
    NAK,
    Command,
    ForbiddenCommandError,
    FrameDecoder,
    Reply,
    Status,
    Variable,
    checksum,
    docked_modules,
    encode_command,
    encode_frame,
    error_of,
    link_answer,
    parse_frame,
    parse_host_command,
    parse_variables,
    rate_ml_per_h,
    volume_infused_ml,
)
from daemon.errors import ConfigError, FrameError


@pytest.mark.parametrize("body", [b"0DC", b"1LE;d", b"1C;d0064", b"", b"2I;1E", b"~}|"])
def test_checksum_and_frames_agree_with_infupy(body: bytes) -> None:
    assert checksum(body) == infupy.genCheckSum(body)


def test_host_commands_are_the_frames_infupy_sends() -> None:
    assert encode_command(0, Command.CONNECT) == infupy.genFrame(b"0", b"DC")
    assert encode_command(3, Command.DISCONNECT) == infupy.genFrame(b"3", b"FC")
    assert encode_command(None, Command.CONNECT) == infupy.genFrame(None, b"DC")
    assert encode_command(2, Command.READ_VARIABLES, Variable.RATE) == infupy.genFrame(b"2", b"LE;d")
    assert encode_command(0, Command.READ_VARIABLES, Variable.MODULES) == infupy.genFrame(b"0", b"LE;b")


def test_our_replies_parse_in_infupy_and_give_its_values() -> None:
    frame = encode_frame(None, "1C;d0064")
    status, origin, message, ok = infupy.parseReply(frame[1:-1])
    assert (status, origin, message, ok) == (infupy.ReplyStatus.correct, b"1", b"d0064", True)
    assert infupy.extractRate(message) == rate_ml_per_h(parse_variables(parse_frame(frame))) == 10.0
    volume = encode_frame(None, "1C;r01F4")
    assert infupy.extractVolume(infupy.parseReply(volume[1:-1])[2]) == 0.5
    assert volume_infused_ml(parse_variables(parse_frame(volume))) == 0.5


def test_replies_and_variables() -> None:
    assert parse_frame(encode_frame(None, "1C")) == Reply("1", Status.CORRECT, None)
    assert parse_frame(encode_frame(None, "C;d0001")) == Reply(None, Status.CORRECT, "d0001")
    variables = parse_variables(parse_frame(encode_frame(None, "0C;b0007;i3;zFF")))
    assert variables == {Variable.MODULES: 7, Variable.MODULE_COUNT: 3}, "unknown identifiers are skipped"
    assert docked_modules(variables) == [1, 2, 3]
    assert docked_modules({Variable.MODULES: 0b100010}) == [2, 6]
    error = parse_frame(encode_frame(None, "2I;1E"))
    assert error_of(error) == ("1E", COMMAND_ERRORS["1E"])
    assert error_of(parse_frame(encode_frame(None, "2I;99"))) == ("99", "unknown error code")
    assert error_of(parse_frame(encode_frame(None, "2C"))) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"1C;d0064AB\x03", "garbage"),
        (b"\x021C;d0064AB", "truncated"),
        (b"\x02\x03", "truncated"),
        (b"\x021C;d006400\x03", "bad_crc"),
        (encode_frame(None, "1X;d0064"), "bad_data"),
        (encode_frame(None, "12C"), "bad_data"),
        (encode_frame(None, "aC"), "bad_data"),
        (b"\x02" + b"A" * 100 + b"00\x03", "bad_length"),
    ],
)
def test_parse_frame_refuses(raw: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(raw)
    assert info.value.reason == reason


def test_variables_refuse_non_hex_and_other_statuses() -> None:
    with pytest.raises(FrameError, match="not hex"):
        parse_variables(parse_frame(encode_frame(None, "1C;d00G4")))
    with pytest.raises(FrameError) as info:
        parse_variables(parse_frame(encode_frame(None, "1I;0E")))
    assert info.value.reason == "unexpected_reply"
    with pytest.raises(FrameError, match="no rate"):
        rate_ml_per_h({})
    with pytest.raises(FrameError, match="no volume"):
        volume_infused_ml({Variable.RATE: 1})


@pytest.mark.parametrize(
    "command",
    [c for c in Command if c not in (Command.CONNECT, Command.DISCONNECT, Command.READ_VARIABLES)],
)
def test_the_codec_refuses_every_command_that_changes_the_pump(command: Command) -> None:
    with pytest.raises(ForbiddenCommandError):
        encode_command(1, command)


def test_command_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one"):
        encode_command(1, Command.READ_VARIABLES)
    with pytest.raises(ValueError, match="no variables"):
        encode_command(1, Command.CONNECT, Variable.RATE)
    with pytest.raises(ValueError, match="one digit"):
        encode_command(10, Command.CONNECT)


def test_host_commands_as_the_base_reads_them() -> None:
    parsed = parse_host_command("1LE;dr")
    assert (parsed.address, parsed.command, parsed.data) == (1, "LE", "dr")
    assert parse_host_command("DC").address is None
    with pytest.raises(FrameError):
        parse_host_command("1le")


def test_decoder_splits_frames_controls_and_noise() -> None:
    decoder = FrameDecoder()
    good = encode_frame(None, "1C;d0064")
    bad = good[:-3] + b"00\x03"
    stream = bytes([ACK]) + b"zz" + good + bytes([ENQ, NAK]) + b"2" + bad + bytes([DC4]) + good[:6]
    items = decoder.feed(stream)
    kinds = [
        ("frame" if i.reply else i.error.reason if i.error else f"control {i.control:#x}", i.link_error)
        for i in items
    ]
    assert kinds == [
        (f"control {ACK:#x}", None),
        ("garbage", None),
        ("frame", None),
        (f"control {ENQ:#x}", None),
        (f"control {NAK:#x}", "2"),
        ("bad_crc", None),
        (f"control {DC4:#x}", None),
    ]
    assert decoder.pending == 6
    assert b"".join(i.raw for i in items) + good[:6] == stream
    assert decoder.feed(good[6:])[0].reply is not None
    assert decoder.feed(bytes([NAK])) == []
    assert decoder.pending == 1
    assert [i.error.reason for i in decoder.flush() if i.error] == ["truncated"]


def test_link_answers_as_infupy_gives_them() -> None:
    decoder = FrameDecoder()
    (enq,) = decoder.feed(bytes([ENQ]))
    assert link_answer(enq) == bytes([DC4])
    (reply,) = decoder.feed(encode_frame(None, "1C;d0064"))
    assert link_answer(reply) == bytes([ACK])
    (spontaneous,) = decoder.feed(encode_frame(None, "2E;a0001"))
    assert link_answer(spontaneous) == bytes([ACK]) + infupy.genFrame(b"2", b"E")
    (bad,) = decoder.feed(b"\x021C;d006400\x03")
    assert link_answer(bad) == bytes([NAK]) + infupy.Error.ECHKSUM.value
    (noise,) = decoder.feed(b"zz")
    assert link_answer(noise) == b""


def test_error_codes_are_infupys() -> None:
    """Every code infupy names has a meaning here, and no other code does."""
    codes = {error.value.decode() for error in infupy.Error if error is not infupy.Error.EUNDEF}
    assert set(COMMAND_ERRORS) | set(LINK_ERRORS) == codes


# ---------------------------------------------------------------- configuration


def _pump(**values: Any) -> PumpConfig:
    return PumpConfig.model_validate({"id": "p1", "bed": "b1", "url": "/dev/null", **values})


def test_config_selects_the_base_with_its_line_settings() -> None:
    pump = _pump(driver="fresenius-base-a", module=2)
    assert (pump.baudrate, pump.bytesize, pump.parity, pump.stopbits, pump.module) == (19200, 7, "E", 1, 2)
    assert _pump(driver="fresenius-base-a", bytesize=8, parity="N").bytesize == 8


@pytest.mark.parametrize(
    "values",
    [
        {"driver": "fresenius-base-a", "address": 3},
        {"driver": "fresenius-base-a", "keepalive_interval_s": 1.0},
        {"driver": "fresenius-base-a", "baudrate": 38400},
        {"driver": "fresenius-base-a", "module": 10},
        {"module": 1},
        {"driver": "alaris-asena", "module": 1},
    ],
)
def test_config_refuses_settings_of_other_protocols(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _pump(**values)


EXAMPLE = Path(__file__).parent.parent / "config" / "ward.example.toml"


def test_the_example_config_fresenius_block_loads_once_uncommented(tmp_path: Path) -> None:
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index('# driver = "fresenius-base-a"') - 3
    assert lines[start] == "# [[pumps]]"
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line.removeprefix("# "))
    path = tmp_path / "ward.toml"
    path.write_text(EXAMPLE.read_text() + "\n" + "\n".join(block) + "\n")
    (base,) = [p for p in load(path).pumps if p.driver == "fresenius-base-a"]
    assert (base.bed, base.module, base.bytesize, base.parity) == ("14", 1, 7, "E")


_BEDS = [
    {
        "ward": "w",
        "id": bed,
        "patient": f"P{bed}",
        "weight_kg": 63,
        "height_cm": 165,
        "protocol_start": "2026-03-02T08:00:00Z",
    }
    for bed in ("12", "14")
]


def test_the_modules_of_one_base_share_its_line() -> None:
    pump = {"driver": "fresenius-base-a", "url": "/dev/ttyUSB2"}
    pumps = [{"id": "a", "bed": "12", "module": 1, **pump}, {"id": "b", "bed": "14", "module": 2, **pump}]
    assert [p.module for p in parse({"beds": _BEDS, "pumps": pumps}).pumps] == [1, 2]


def test_one_bed_has_one_pump_even_on_one_base() -> None:
    """A second module for the same bed is refused, as a second pump on its own line is:
    the dose rules read one blinatumomab pump per bed."""
    pump = {"driver": "fresenius-base-a", "url": "/dev/ttyUSB2"}
    pumps = [{"id": "a", "bed": "12", "module": 1, **pump}, {"id": "b", "bed": "12", "module": 2, **pump}]
    with pytest.raises(ConfigError, match="one blinatumomab pump per bed"):
        parse({"beds": _BEDS, "pumps": pumps})


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ({"module": 1}, "already reads module 1"),
        ({"module": None}, "name their module"),
        ({"module": 2, "parity": "N"}, "other line settings"),
        ({"driver": "ne1000", "module": None}, "another driver"),
        ({"driver": "alaris-asena", "module": None, "baudrate": 19200}, "one Alaris per line"),
    ],
)
def test_pumps_that_cannot_share_a_line_are_refused(second: dict[str, Any], message: str) -> None:
    first = {"id": "a", "bed": "12", "driver": "fresenius-base-a", "url": "/dev/ttyUSB2", "module": 1}
    other = {**first, "id": "b", "bed": "14", **second}
    other = {k: v for k, v in other.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        parse({"beds": _BEDS, "pumps": [first, other]})
