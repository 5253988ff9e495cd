"""Fuzzing the Fresenius codec: any bytes give frames, link controls, parsed replies or
FrameErrors, nothing else.

As for the Alaris (``tests/test_alaris_fuzz.py``): one property over the whole receive
path (stream decoder, frame check, reply and variable parsers, the link answers) on
streams of valid frames, controls and noise, edited anywhere and cut into arbitrary
reads, 10,000 examples (``WARDD_FRESENIUS_FUZZ_EXAMPLES``), marked ``slow``.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.devices.fresenius import (
    ACK,
    DC4,
    ENQ,
    ETX,
    NAK,
    STX,
    FrameDecoder,
    Reply,
    docked_modules,
    encode_frame,
    error_of,
    link_answer,
    parse_frame,
    parse_host_command,
    parse_variables,
    rate_ml_per_h,
    volume_infused_ml,
)
from daemon.errors import FrameError
from tests.codec_fuzz import SMALL, decode_in_reads, fuzz_settings, streams

FUZZ = fuzz_settings("WARDD_FRESENIUS_FUZZ_EXAMPLES")

_STOCK = [
    encode_frame(None, text)
    for text in [
        "1C;d0064",
        "1C;r01F4",
        "0C;b0007;i3",
        "2C",
        "2I;1E",
        "3I;99",
        "1E;a0001",
        "1M;k0001",
        "C;dFFFFFFFF",
        "1C;dXYZ",
        "1C;;;",
        "9X",
    ]
] + [bytes([ACK]), bytes([ENQ]), bytes([DC4]), bytes([NAK]) + b"2", bytes([NAK])]
_FRAMING = [STX, ETX, ACK, ENQ, DC4, NAK, ord(";")]


def _parse_every_way(reply: Reply, text: str) -> None:
    error_of(reply)
    with contextlib.suppress(FrameError):
        variables = parse_variables(reply)
        for extract in (rate_ml_per_h, volume_infused_ml):
            with contextlib.suppress(FrameError):
                assert extract(variables) >= 0
        with contextlib.suppress(FrameError):
            docked_modules(variables)
    with contextlib.suppress(FrameError):
        parse_host_command(text)


@pytest.mark.slow
@FUZZ
@given(case=streams(_STOCK, _FRAMING))
def test_receive_path_never_crashes(case: tuple[bytes, list[int]]) -> None:
    items = decode_in_reads(FrameDecoder(), *case)
    for item in items:
        kinds = [item.reply is not None, item.control is not None, item.error is not None]
        assert sum(kinds) == 1
        answer = link_answer(item)
        assert answer in (b"", bytes([DC4]), bytes([NAK]) + b"2") or answer.startswith(bytes([ACK]))
        if item.reply is not None:
            assert item.text is not None
            assert parse_frame(item.raw) == item.reply
            _parse_every_way(item.reply, item.text)


@SMALL
@given(data=st.binary(max_size=120))
def test_parse_frame_gives_a_reply_or_a_frame_error(data: bytes) -> None:
    try:
        reply = parse_frame(data)
    except FrameError:
        return
    assert data[0] == STX
    assert data[-1] == ETX
    _parse_every_way(reply, "")
