"""Fuzzing the Alaris codec: any bytes give frames, parsed replies or FrameErrors, nothing else.

One property covers the whole receive path (stream decoder, frame check, reply
parsers) on streams made of valid replies and noise, edited anywhere (framing bytes
among the insertions) and cut into arbitrary reads; it runs 10,000 examples
(``WARDD_ALARIS_FUZZ_EXAMPLES`` changes that), some 20-35 s on 2 shared cores, so it is
marked ``slow`` and the fast pure run leaves it to the full suite. Two smaller ones check the frame
check alone on any bytes, and generated valid replies round trip.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.devices.alaris import (
    END,
    ESC,
    REMOTE_COMMANDS,
    START,
    Command,
    Frame,
    FrameDecoder,
    encode_frame,
    parse_alarm,
    parse_command,
    parse_frame,
    parse_rate,
    parse_remote,
    parse_serial_number,
    parse_volume_infused,
)
from daemon.errors import FrameError
from tests.codec_fuzz import SMALL, decode_in_reads, fuzz_settings, streams

FUZZ = fuzz_settings("WARDD_ALARIS_FUZZ_EXAMPLES")

_VALUES = st.sampled_from(
    [
        *["10.00", "0.10", "1.234", "0", "9999.99", "-1", "1e3", "nan", "", "8002-51740", "ENABLED"],
        *["DISABLED", "AL_NOALM", "AL_OCCLU", "AL DRDIS", " ", "al_occlu"],
    ]
)
_UNITS = st.sampled_from(["ml/h", "ml", "ml/min", "ML/H", "ul", ""])
_COMMANDS = st.sampled_from([c.value for c in Command] + ["INF", "X"])


@st.composite
def replies(draw: st.DrawFn) -> bytes:
    """Well-formed frames with plausible and implausible values."""
    fields = [draw(_COMMANDS), *draw(st.lists(st.one_of(_VALUES, _UNITS), max_size=4))]
    return encode_frame(fields)


# A fixed stock of well-formed replies keeps each example cheap to draw, so that 10,000
# of them run in seconds; the edits below spoil them anywhere.
_STOCK = [
    encode_frame(fields)
    for fields in [
        ["INF_RATE", "10.00", "ml/h"],
        ["INF_RATE", "0.10", "ml/min"],
        ["INF_RATE", "1e3", "ml/h"],
        ["INF_VI", "1.234", "ml"],
        ["INF_VI", "", "ml"],
        ["INF_VI", "99999.9", "l"],
        ["INST_SERIALNO", "8002-51740"],
        ["INST_SERIALNO", "A", "B"],
        ["REMOTE_CTRL", "ENABLED"],
        ["REMOTE_CFG", "DISABLED"],
        ["REMOTE_CTRL", "MAYBE", "x"],
        ["ALARM", "AL_NOALM", " ", " "],
        ["ALARM", "AL_OCCLU", "OCCLUSION", ""],
        ["ALARM", "AL DRDIS"],
        ["ALARM"],
        ["INF_START"],
        ["X"],
    ]
]
_FRAMING = [START, END, ESC, ord("|"), ord("^")]


def _parse_every_way(frame: Frame) -> None:
    """Every reply parser on one frame: a value or a FrameError."""
    parsers = [parse_rate, parse_volume_infused, parse_serial_number, parse_alarm, parse_command]
    for parser in parsers:
        with contextlib.suppress(FrameError):
            parser(frame)
    for command in REMOTE_COMMANDS:
        with contextlib.suppress(FrameError):
            parse_remote(frame, command)


@pytest.mark.slow
@FUZZ
@given(case=streams(_STOCK, _FRAMING))
def test_receive_path_never_crashes(case: tuple[bytes, list[int]]) -> None:
    items = decode_in_reads(FrameDecoder(), *case)
    for item in items:
        assert (item.frame is None) != (item.error is None)
        if item.frame is not None:
            # Whatever the decoder accepts, the frame check accepts too.
            assert parse_frame(item.raw) == item.frame
            _parse_every_way(item.frame)


@SMALL
@given(data=st.binary(max_size=300))
def test_parse_frame_gives_a_frame_or_a_frame_error(data: bytes) -> None:
    try:
        frame = parse_frame(data)
    except FrameError:
        return
    assert data[0] == START
    assert data[-1] == END
    _parse_every_way(frame)


@SMALL
@given(frame=replies())
def test_valid_replies_round_trip(frame: bytes) -> None:
    parsed = parse_frame(frame)
    assert encode_frame(parsed.fields) == frame
    items = FrameDecoder().feed(frame)
    assert [item.frame for item in items] == [parsed]
