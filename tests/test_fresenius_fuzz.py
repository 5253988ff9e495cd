"""Fuzzing the Fresenius codec: any bytes give frames, link controls, parsed replies or
FrameErrors, nothing else.

As for the Alaris (``tests/test_alaris_fuzz.py``): one property over the whole receive
path (stream decoder, frame check, reply and variable parsers, the link answers) on
streams of valid frames, controls and noise, edited anywhere and cut into arbitrary
reads, 10,000 examples (``WARDD_FRESENIUS_FUZZ_EXAMPLES``), marked ``slow``.
"""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.errors import FrameError
from daemon.fresenius import (
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

EXAMPLES = int(os.environ.get("WARDD_FRESENIUS_FUZZ_EXAMPLES", "10000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = settings(max_examples=500, deadline=None)

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
_EDIT = st.tuples(
    st.sampled_from(["flip", "insert", "delete"]),
    st.integers(0, 400),
    st.one_of(st.sampled_from(_FRAMING), st.integers(0, 255)),
)


def _edited(stream: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(stream)
    for op, position, byte in edits:
        if not out:
            out.append(byte)
            continue
        index = position % len(out)
        if op == "flip":
            out[index] ^= byte or 1
        elif op == "insert":
            out.insert(index, byte)
        else:
            del out[index]
    return bytes(out)


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
@given(
    pieces=st.lists(st.one_of(st.sampled_from(_STOCK), st.binary(max_size=24)), max_size=5),
    edits=st.lists(_EDIT, max_size=4),
    cuts=st.lists(st.integers(1, 48), max_size=6),
)
def test_receive_path_never_crashes(
    pieces: list[bytes], edits: list[tuple[str, int, int]], cuts: list[int]
) -> None:
    stream = _edited(b"".join(pieces), edits)
    decoder = FrameDecoder()
    items = []
    rest = stream
    for cut in cuts:
        items += decoder.feed(rest[:cut])
        rest = rest[cut:]
    items += decoder.feed(rest)
    items += decoder.flush()
    assert b"".join(item.raw for item in items) == stream, "every byte lands in exactly one item"
    assert decoder.pending == 0
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
